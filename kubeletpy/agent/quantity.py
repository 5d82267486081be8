"""Kubernetes resource quantities ("100m", "1.5", "64Mi", "1e3") as exact numbers.

The agent needs cpu in millicores and memory/storage in bytes; Fractions keep "0.1" exact
so 100m and 0.1 give the same cpu shares.
"""

from __future__ import annotations

from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def parse(q: str | int | float | None) -> Fraction:
    """The value of a quantity; raises ValueError on garbage (the API server validated it)."""
    if q is None or q == "":
        return Fraction(0)
    if isinstance(q, int | float):
        return Fraction(q)
    s = str(q).strip()
    for suffix, mult in _BINARY.items():
        if s.endswith(suffix):
            return Fraction(s[: -len(suffix)]) * mult
    if "e" in s.lower() and not s.endswith(("E",)):
        mant, _, exp = s.lower().partition("e")
        return Fraction(mant) * Fraction(10) ** int(exp)
    if s and s[-1] in _DECIMAL:
        return Fraction(s[:-1]) * _DECIMAL[s[-1]]
    return Fraction(s)


def milli(q: str | int | float | None) -> int:
    """cpu in millicores, rounded up like the API server does."""
    v = parse(q) * 1000
    return -((-v.numerator) // v.denominator)


def value(q: str | int | float | None) -> int:
    """bytes (or pods), rounded up."""
    v = parse(q)
    return -((-v.numerator) // v.denominator)


def fmt_bytes(n: int) -> str:
    """A compact canonical form for node capacity: Ki when it divides, plain bytes otherwise."""
    return f"{n // 1024}Ki" if n % 1024 == 0 else str(n)


def fmt_milli(m: int) -> str:
    return str(m // 1000) if m % 1000 == 0 else f"{m}m"
