"""Validation helpers shared by the kinds, with the real API server's wording.

Also the field schema walker behind `fieldValidation`: each kind declares the fields it
knows as a nested dict (see `kinds.py`), and `check_fields` reports unknown fields (Strict:
400, Warn: a `Warning:` header, Ignore: silently pruned) and wrongly typed values.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import Cause, invalid, required, too_long

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_SVC = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

MSG_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def dns1123_label(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str) or not value:
        return [required(field)]
    out = []
    if len(value) > 63:
        out.append(invalid(field, value, "must be no more than 63 characters"))
    if not DNS1123_LABEL.match(value):
        out.append(invalid(field, value, MSG_LABEL))
    return out


def dns1123_subdomain(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str) or not value:
        return [required(field)]
    out = []
    if len(value) > 253:
        out.append(invalid(field, value, "must be no more than 253 characters"))
    if not DNS1123_SUBDOMAIN.match(value):
        out.append(invalid(field, value, MSG_SUBDOMAIN))
    return out


def qualified_name(field: str, value: str) -> list[Cause]:
    prefix, _, name = value.rpartition("/")
    out = []
    if "/" in value and not prefix:
        out.append(invalid(field, value, "prefix part must be non-empty"))
    if prefix:
        if len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            out.append(invalid(field, value, "prefix part " + MSG_SUBDOMAIN))
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        out.append(invalid(field, value, "name part must consist of alphanumeric characters, '-', '_' or '.', "
                                         "and must start and end with an alphanumeric character (e.g. "
                                         "'MyName',  or 'my.name',  or '123-abc', regex used for validation "
                                         "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') and be no more "
                                         "than 63 characters"))
    return out


def labels(field: str, value: Any) -> list[Cause]:
    if value is None:
        return []
    out: list[Cause] = []
    for k, v in value.items():
        out += qualified_name(field, k)
        if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.match(v):
            out.append(invalid(f"{field}", v, "a valid label must be an empty string or consist of alphanumeric "
                                              "characters, '-', '_' or '.', and must start and end with an "
                                              "alphanumeric character and be no more than 63 characters"))
    return out


def annotation_map(field: str, value: Any) -> list[Cause]:
    if value is None:
        return []
    out: list[Cause] = []
    total = 0
    for k, v in value.items():
        out += qualified_name(field, k.lower())
        total += len(k) + len(v if isinstance(v, str) else "")
    if total > 256 * 1024:
        out.append(too_long(field, 256 * 1024))
    return out


def port_number(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        return [invalid(field, value, "must be between 1 and 65535, inclusive")]
    return []


def port_name(field: str, value: str) -> list[Cause]:
    if len(value) > 15:
        return [invalid(field, value, "must be no more than 15 characters")]
    if not _IANA_SVC.match(value) or "--" in value or not re.search("[a-z]", value):
        return [invalid(field, value, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
                                      " and at least one letter")]
    return []


def env_name(field: str, value: Any) -> list[Cause]:
    if not isinstance(value, str) or not value:
        return [required(field)]
    if not _ENV_NAME.match(value):
        return [invalid(field, value, "a valid environment variable name must consist of alphabetic "
                                      "characters, digits, '_', '-', or '.', and must not start with a digit")]
    return []


def config_key(field: str, value: str) -> list[Cause]:
    if len(value) > 253 or not _CONFIG_KEY.match(value) or value in (".", ".."):
        return [invalid(field, value, "a valid config key must consist of alphanumeric characters, '-', '_' "
                                      "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
                                      "for validation is '[-._a-zA-Z0-9]+')")]
    return []


# -- resource quantities ("100m", "64Mi", "1e3", "0.5")

_QTY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_SUFFIX: dict[str, Decimal | int] = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
           "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
           "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}

QTY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


def parse_quantity(value: Any) -> Decimal | None:
    """The quantity's value, or None when it does not parse."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QTY.match(value.strip())
    if not m:
        return None
    try:
        num = Decimal(m.group(1))
    except InvalidOperation:
        return None
    suf = m.group(2) or ""
    if suf[:1] in ("e", "E"):
        return num * (Decimal(10) ** int(suf[1:]))
    return num * Decimal(_SUFFIX[suf])


# -- the field schema: nested dicts of known fields

# Leaf types.
STR, INT, BOOL, NUM, INTSTR, QTY, ANY, TIME = "string", "integer", "boolean", "number", "intstr", "qty", "any", "time"


class ListOf:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


class MapOf:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


def _type_ok(t: str, v: Any) -> bool:
    if v is None:
        return True
    if t in (STR, TIME):
        return isinstance(v, str)
    if t == INT:
        return isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer()
    if t == BOOL:
        return isinstance(v, bool)
    if t == NUM:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if t in (INTSTR, QTY):
        return isinstance(v, str | int | float) and not isinstance(v, bool)
    return True


def check_fields(obj: Any, schema: Any, path: str, unknown: list[str], bad: list[str], prune: bool) -> None:
    """Walk `obj` against `schema`, collecting unknown field paths and type mismatches.

    With `prune`, unknown fields are removed in place (what the API server does when the
    client did not ask for strict validation).
    """
    if schema == ANY or obj is None:
        return
    if isinstance(schema, str):
        if not _type_ok(schema, obj):
            bad.append(f"{path or '.'}: expected {schema}, got {type(obj).__name__}")
        return
    if isinstance(schema, ListOf):
        if not isinstance(obj, list):
            bad.append(f"{path}: expected array, got {type(obj).__name__}")
            return
        for i, item in enumerate(obj):
            check_fields(item, schema.item, f"{path}[{i}]", unknown, bad, prune)
        return
    if isinstance(schema, MapOf):
        if not isinstance(obj, dict):
            bad.append(f"{path}: expected object, got {type(obj).__name__}")
            return
        for k, v in obj.items():
            check_fields(v, schema.item, f"{path}.{k}", unknown, bad, prune)
        return
    if not isinstance(obj, dict):
        bad.append(f"{path or '.'}: expected object, got {type(obj).__name__}")
        return
    for k in list(obj):
        sub = schema.get(k)
        if sub is None:
            unknown.append(f"{path}.{k}" if path else k)
            if prune:
                del obj[k]
            continue
        check_fields(obj[k], sub, f"{path}.{k}" if path else k, unknown, bad, prune)


def invalid_cause(field: str, value: Any) -> Cause:
    return invalid(field, value, "unsupported value")
