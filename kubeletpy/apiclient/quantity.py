"""Kubernetes resource quantities ("100m", "64Mi", "1e3", "1.5Gi") as exact numbers.

Parsed into `Fraction` so "0.1" + "0.2" cpu is exactly "300m" and no float rounding
decides whether a pod fits. The scheduler compares cpu in millicores and everything else
in base units, both rounded *up* like Kubernetes' `MilliValue()`/`Value()`, so a request
of 1.5 bytes needs 2.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SUFFIX = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")


def parse_quantity(value: object) -> Fraction:
    """A quantity string (or a plain number) as an exact Fraction; ValueError when malformed."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    if not isinstance(value, str):
        raise ValueError(f"invalid quantity {value!r}")
    m = _RE.match(value.strip())
    if not m:
        raise ValueError(f"invalid quantity {value!r}")
    number, exp, suffix = m.groups()
    q = Fraction(number)
    if exp:
        q *= Fraction(10) ** int(exp[1:])
    else:
        q *= _SUFFIX[suffix or ""]
    return q


def milli_value(value: object) -> int:
    """In thousandths, rounded up (cpu is compared in millicores)."""
    return math.ceil(parse_quantity(value) * 1000)


def value(value: object) -> int:
    """In base units, rounded up (bytes, pods, extended resources)."""
    return math.ceil(parse_quantity(value))


def format_milli(milli: int) -> str:
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"
