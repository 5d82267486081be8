"""Request bodies in `application/vnd.kubernetes.protobuf`, decoded to the JSON the JSON path gets.

kubectl's typed-client generator commands (`create namespace|configmap|secret ...`) POST
protobuf (measured: kubectl 1.32 and 1.33 do; 1.27-1.31 send JSON; `kubectl run` always sends
JSON). The body is the 4-byte magic `k8s\\0` and a `runtime.Unknown` message:

    Unknown  { TypeMeta typeMeta = 1; bytes raw = 2; string contentEncoding = 3; string contentType = 4 }
    TypeMeta { string apiVersion = 1; string kind = 2 }

and `raw` is the typed object in the field numbers of k8s.io/api core/v1 and apimachinery
meta/v1 `generated.proto`. This module is a small wire reader (varints and length-delimited
fields) plus schemas for exactly the kinds kubectl sends that way and this server serves:
Namespace, ConfigMap, Secret. Anything else is refused with 415 by the caller.

Go's generated marshallers write every non-pointer field, empty or not (`name=""`,
`generation=0`, an empty `creationTimestamp`), so empty strings, zero numbers, zero times and
empty messages/maps are dropped, as `omitempty` does for JSON. Bools are kept: in these kinds
they are all pointers (`immutable`, `controller`, `blockOwnerDeletion`), so present means set.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

MAGIC = b"k8s\x00"


class DecodeError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint too long")


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varint/fixed, bytes for length-delimited."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise DecodeError("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise DecodeError(f"field {num}: length {n} past the end of the message")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 1:
            if pos + 8 > len(buf):
                raise DecodeError("truncated fixed64")
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 5:
            if pos + 4 > len(buf):
                raise DecodeError("truncated fixed32")
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise DecodeError(f"field {num}: unsupported wire type {wt}")
        out.append((num, wt, val))
    return out


# -- schemas: field number -> (json name, type, repeated)

Schema = dict[int, tuple[str, Any, bool]]

TIME: Schema = {1: ("seconds", "int", False), 2: ("nanos", "int", False)}
FIELDS_V1 = "fieldsV1"
OWNER_REFERENCE: Schema = {
    1: ("kind", "string", False), 3: ("name", "string", False), 4: ("uid", "string", False),
    5: ("apiVersion", "string", False), 6: ("controller", "bool", False), 7: ("blockOwnerDeletion", "bool", False),
}
MANAGED_FIELDS_ENTRY: Schema = {
    1: ("manager", "string", False), 2: ("operation", "string", False), 3: ("apiVersion", "string", False),
    4: ("time", "time", False), 6: ("fieldsType", "string", False), 7: ("fieldsV1", FIELDS_V1, False),
    8: ("subresource", "string", False),
}
OBJECT_META: Schema = {
    1: ("name", "string", False), 2: ("generateName", "string", False), 3: ("namespace", "string", False),
    4: ("selfLink", "string", False), 5: ("uid", "string", False), 6: ("resourceVersion", "string", False),
    7: ("generation", "int", False), 8: ("creationTimestamp", "time", False),
    9: ("deletionTimestamp", "time", False), 10: ("deletionGracePeriodSeconds", "int", False),
    11: ("labels", "map_string", False), 12: ("annotations", "map_string", False),
    13: ("ownerReferences", OWNER_REFERENCE, True), 14: ("finalizers", "string", True),
    17: ("managedFields", MANAGED_FIELDS_ENTRY, True),
}
NAMESPACE_CONDITION: Schema = {
    1: ("type", "string", False), 2: ("status", "string", False), 4: ("lastTransitionTime", "time", False),
    5: ("reason", "string", False), 6: ("message", "string", False),
}
NAMESPACE: Schema = {
    1: ("metadata", OBJECT_META, False),
    2: ("spec", {1: ("finalizers", "string", True)}, False),
    3: ("status", {1: ("phase", "string", False), 2: ("conditions", NAMESPACE_CONDITION, True)}, False),
}
CONFIGMAP: Schema = {
    1: ("metadata", OBJECT_META, False), 2: ("data", "map_string", False), 3: ("binaryData", "map_bytes", False),
    4: ("immutable", "bool", False),
}
SECRET: Schema = {
    1: ("metadata", OBJECT_META, False), 2: ("data", "map_bytes", False), 3: ("type", "string", False),
    4: ("stringData", "map_string", False), 5: ("immutable", "bool", False),
}

KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): NAMESPACE,
    ("v1", "ConfigMap"): CONFIGMAP,
    ("v1", "Secret"): SECRET,
}


def _string(b: bytes, where: str) -> str:
    try:
        return b.decode()
    except UnicodeDecodeError:
        raise DecodeError(f"{where}: invalid UTF-8") from None


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _time(b: bytes) -> str | None:
    t = decode_message(b, TIME, "time")
    seconds = t.get("seconds", 0)
    if not seconds and not t.get("nanos"):
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(typ: Any, wt: int, val: Any, where: str) -> Any:
    if isinstance(typ, dict):
        if wt != 2:
            raise DecodeError(f"{where}: expected a message")
        return decode_message(val, typ, where)
    if typ == "string":
        if wt != 2:
            raise DecodeError(f"{where}: expected a string")
        return _string(val, where)
    if typ == "int":
        if wt != 0:
            raise DecodeError(f"{where}: expected a varint")
        return _int64(val)
    if typ == "bool":
        if wt != 0:
            raise DecodeError(f"{where}: expected a bool")
        return bool(val)
    if typ == "time":
        if wt != 2:
            raise DecodeError(f"{where}: expected a time")
        return _time(val)
    if typ == FIELDS_V1:
        raw = dict((n, v) for n, _, v in fields(val)).get(1, b"")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise DecodeError(f"{where}: fieldsV1 is not JSON") from None
    raise DecodeError(f"{where}: unsupported type {typ}")  # pragma: no cover - schema bug


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == {} or (isinstance(v, int) and not isinstance(v, bool) and v == 0)


def decode_message(buf: bytes, schema: Schema, where: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, wt, val in fields(buf):
        spec = schema.get(num)
        if spec is None:
            continue  # unknown field: skipped, as protobuf readers do
        name, typ, repeated = spec
        path = f"{where}.{name}" if where else name
        if typ in ("map_string", "map_bytes"):
            if wt != 2:
                raise DecodeError(f"{path}: expected a map entry")
            entry = {n: v for n, w, v in fields(val) if w == 2}
            key = _string(entry.get(1, b""), path)
            raw = entry.get(2, b"")
            out.setdefault(name, {})[key] = (base64.b64encode(raw).decode() if typ == "map_bytes"
                                             else _string(raw, f"{path}[{key}]"))
            continue
        value = _scalar(typ, wt, val, path)
        if repeated:
            out.setdefault(name, []).append(value)
        elif not _empty(value):
            out[name] = value
        else:
            out.pop(name, None)  # a later empty value overrides an earlier one (last wins)
    return out


class NotEnvelope(DecodeError):
    """Not a Kubernetes protobuf envelope at all (no magic number)."""


class UnsupportedKind(Exception):
    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"{api_version}/{kind}")
        self.api_version, self.kind = api_version, kind


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON-shaped object of a protobuf request body. DecodeError for a malformed body,
    UnsupportedKind for a kind without a schema here."""
    if not body.startswith(MAGIC):
        raise NotEnvelope("the body does not start with the Kubernetes protobuf magic number k8s\\x00")
    unknown = {n: v for n, w, v in fields(body[len(MAGIC):]) if w == 2}
    tm = {n: v for n, w, v in fields(unknown.get(1, b"")) if w == 2}
    api_version, kind = _string(tm.get(1, b""), "apiVersion"), _string(tm.get(2, b""), "kind")
    encoding = _string(unknown.get(3, b""), "contentEncoding")
    ctype = _string(unknown.get(4, b""), "contentType")
    if encoding:
        raise DecodeError(f"unsupported content encoding {encoding!r}")
    if ctype and "protobuf" not in ctype:
        raise DecodeError(f"unsupported embedded content type {ctype!r}")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise UnsupportedKind(api_version, kind)
    obj = decode_message(unknown.get(2, b""), schema)
    return {"apiVersion": api_version, "kind": kind, **obj}


# -- encoding, for tests and tools (the inverse of decode_message for these schemas)

def _key(num: int, wt: int) -> bytes:
    return _encode_varint(num << 3 | wt)


def _encode_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(num: int, data: bytes) -> bytes:
    return _key(num, 2) + _encode_varint(len(data)) + data


def encode_message(obj: dict[str, Any], schema: Schema) -> bytes:
    out = bytearray()
    for num, (name, typ, repeated) in sorted(schema.items()):
        if name not in obj or obj[name] is None:
            continue
        values = obj[name] if repeated else [obj[name]]
        for val in values:
            if typ in ("map_string", "map_bytes"):
                for k, v in val.items():
                    raw = base64.b64decode(v) if typ == "map_bytes" else v.encode()
                    out += _ld(num, _ld(1, k.encode()) + _ld(2, raw))
            elif isinstance(typ, dict):
                out += _ld(num, encode_message(val, typ))
            elif typ == "string":
                out += _ld(num, val.encode())
            elif typ in ("int", "bool"):
                out += _key(num, 0) + _encode_varint(int(val))
            elif typ == "time":
                ts = dt.datetime.strptime(val, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
                out += _ld(num, encode_message({"seconds": int(ts)}, TIME))
            elif typ == FIELDS_V1:
                out += _ld(num, _ld(1, json.dumps(val).encode()))
    return bytes(out)


def encode_object(obj: dict[str, Any]) -> bytes:
    schema = KINDS[(obj["apiVersion"], obj["kind"])]
    tm = _ld(1, obj["apiVersion"].encode()) + _ld(2, obj["kind"].encode())
    return MAGIC + _ld(1, tm) + _ld(2, encode_message(obj, schema)) + _ld(3, b"") + _ld(4, b"")
