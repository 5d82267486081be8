"""Label and field selectors, parsed once per request and matched per object.

Label selector grammar (apimachinery `labels.Parse`): comma-separated requirements,
each `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`.
Field selectors are `f=v`, `f==v`, `f!=v` joined by commas; which fields exist is per kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from .errors import APIError, bad_request

Matcher = Callable[[Mapping[str, str]], bool]

_TOKEN = re.compile(r"\s*(notin\b|in\b|!=|==|=|!|\(|\)|,|>|<|[^\s!=,()<>]+)")


def _tokens(s: str) -> list[str]:
    out, pos = [], 0
    while pos < len(s):
        if s[pos:].strip() == "":
            break
        m = _TOKEN.match(s, pos)
        if not m:
            raise bad_request(f"unable to parse requirement: invalid label selector {s!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def _absent(k: str) -> Matcher:
    return lambda lb: k not in lb


def _present(k: str) -> Matcher:
    return lambda lb: k in lb


def _equals(k: str, v: str, eq: bool) -> Matcher:
    return (lambda lb: lb.get(k) == v) if eq else (lambda lb: lb.get(k) != v)


def _member(k: str, vs: frozenset[str], inside: bool) -> Matcher:
    return (lambda lb: lb.get(k) in vs) if inside else (lambda lb: lb.get(k) not in vs)


def _compare(k: str, n: int, gt: bool) -> Matcher:
    return lambda lb: _cmp(lb.get(k), n, gt)


def parse_label_selector(s: str | None) -> Matcher | None:
    """A predicate over a labels map, or None for "everything"."""
    if not s or not s.strip():
        return None
    toks = _tokens(s)
    reqs: list[Matcher] = []
    i = 0

    def err() -> APIError:
        return bad_request(f"unable to parse requirement: invalid label selector {s!r}")

    while i < len(toks):
        if toks[i] == "!":
            if i + 1 >= len(toks):
                raise err()
            key = toks[i + 1]
            reqs.append(_absent(key))
            i += 2
        else:
            key = toks[i]
            op = toks[i + 1] if i + 1 < len(toks) else ","
            if op == ",":
                reqs.append(_present(key))
                i += 1
            elif op in ("=", "==", "!="):
                if i + 2 < len(toks) and toks[i + 2] not in (",",):
                    val = toks[i + 2]
                    i += 3
                else:
                    val = ""
                    i += 2
                reqs.append(_equals(key, val, op != "!="))
            elif op in ("in", "notin"):
                if i + 2 >= len(toks) or toks[i + 2] != "(":
                    raise err()
                j, vals = i + 3, set[str]()
                while j < len(toks) and toks[j] != ")":
                    if toks[j] != ",":
                        vals.add(toks[j])
                    j += 1
                if j >= len(toks):
                    raise err()
                reqs.append(_member(key, frozenset(vals), op == "in"))
                i = j + 1
            elif op in (">", "<"):
                if i + 2 >= len(toks):
                    raise err()
                try:
                    n = int(toks[i + 2])
                except ValueError:
                    raise err() from None
                reqs.append(_compare(key, n, op == ">"))
                i += 3
            else:
                raise err()
        if i < len(toks):
            if toks[i] != ",":
                raise err()
            i += 1
    return lambda lb: all(r(lb) for r in reqs)


def _cmp(v: str | None, n: int, gt: bool) -> bool:
    try:
        x = int(v) if v is not None else None
    except ValueError:
        return False
    return x is not None and (x > n if gt else x < n)


def parse_field_selector(s: str | None, allowed: frozenset[str], kind_plural: str) -> list[tuple[str, bool, str]]:
    """Parse into (field, equal?, value) terms; unknown fields are a 400 like the real server's."""
    if not s or not s.strip():
        return []
    terms = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{s}'; can't understand '{part}'")
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in allowed:
            raise bad_request(f'field label not supported: {field}')
        terms.append((field, op != "!=", value))
    return terms


def match_fields(terms: list[tuple[str, bool, str]], fields: Mapping[str, str]) -> bool:
    for field, eq, value in terms:
        if (fields.get(field, "") == value) != eq:
            return False
    return True
