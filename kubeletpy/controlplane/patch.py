"""The three PATCH flavours: JSON patch (RFC 6902), merge patch (RFC 7386) and
Kubernetes strategic merge patch.

Strategic merge differs from merge patch in one important way: lists of objects that
have a *merge key* (containers by `name`, ports by `containerPort`, conditions by `type`,
...) are merged element by element instead of replaced, and a few `$` directives
(`$patch`, `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>`, `$retainKeys`)
steer the merge. Which lists have which key is table-driven (`MergeKeys`), so a new kind
adds entries instead of code. Server-side apply reuses the same merge.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .errors import APIError, bad_request

# Suffix pattern (field path without indices, "[]" marks list items) -> merge key.
DEFAULT_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "containers[].ports": "containerPort",
    "initContainers[].ports": "containerPort",
    "ephemeralContainers[].ports": "containerPort",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "metadata.ownerReferences": "uid",
    "status.addresses": "type",
}
# Lists of scalars merged as sets.
DEFAULT_SET_LISTS: frozenset[str] = frozenset({"metadata.finalizers"})


class MergeKeys:
    """Looks up how a list at a given field path is merged; results are cached per path."""

    def __init__(self, keys: dict[str, str] | None = None, sets: frozenset[str] | None = None) -> None:
        self.keys = dict(DEFAULT_MERGE_KEYS, **(keys or {}))
        self.sets = DEFAULT_SET_LISTS | (sets or frozenset())
        self._patterns = sorted(self.keys, key=len, reverse=True)
        self._cache: dict[str, str | None] = {}

    def key(self, path: str) -> str | None:
        try:
            return self._cache[path]
        except KeyError:
            pass
        found = None
        for p in self._patterns:
            if path == p or path.endswith("." + p):
                found = self.keys[p]
                break
        self._cache[path] = found
        return found

    def is_set(self, path: str) -> bool:
        return path in self.sets


def strip_directives(v: Any) -> Any:
    """A deep copy of `v` without `$`-directive keys (they must never be stored)."""
    if isinstance(v, dict):
        return {k: strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [strip_directives(x) for x in v]
    return v


# -- RFC 7386 merge patch

def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# -- strategic merge patch

def strategic_merge(orig: Any, patch: Any, keys: MergeKeys, path: str = "") -> Any:
    if not isinstance(patch, dict):
        return strip_directives(patch)
    if not isinstance(orig, dict):
        orig = {}
    if patch.get("$patch") == "replace":
        return strip_directives(patch)
    result = dict(orig)
    orders: dict[str, list] = {}
    deletes: dict[str, list] = {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k[len("$setElementOrder/"):]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            deletes[k[len("$deleteFromPrimitiveList/"):]] = v
            continue
        if k.startswith("$"):
            raise bad_request(f"unknown patch directive {k!r}")
        sub = f"{path}.{k}" if path else k
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            if v.get("$patch") == "delete":
                result.pop(k, None)
            else:
                result[k] = strategic_merge(result.get(k), v, keys, sub)
        elif isinstance(v, list):
            cur = result.get(k)
            result[k] = _merge_list(cur if isinstance(cur, list) else [], v, keys, sub)
        else:
            result[k] = v
    for f, vals in deletes.items():
        if isinstance(result.get(f), list):
            result[f] = [x for x in result[f] if x not in vals]
    for f, order in orders.items():
        if isinstance(result.get(f), list) and isinstance(order, list):
            sub = f"{path}.{f}" if path else f
            result[f] = _apply_order(result[f], order, keys.key(sub))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(cur: list, patch: list, keys: MergeKeys, path: str) -> list:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [strip_directives(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    mk = keys.key(path)
    if mk and all(isinstance(i, dict) for i in patch):
        result = list(cur)
        for item in patch:
            if item.get("$patch") == "delete":
                result = [r for r in result if not (isinstance(r, dict) and r.get(mk) == item.get(mk))]
                continue
            idx = next((n for n, r in enumerate(result) if isinstance(r, dict) and mk in item
                        and r.get(mk) == item[mk]), None)
            if idx is None:
                result.append(strip_directives(item))
            else:
                result[idx] = strategic_merge(result[idx], item, keys, path + "[]")
        return result
    if keys.is_set(path):
        result = list(cur)
        for x in patch:
            if x not in result:
                result.append(x)
        return result
    return strip_directives(patch)


def _apply_order(items: list, order: list, mk: str | None) -> list:
    def ident(x: Any) -> Any:
        if mk and isinstance(x, dict):
            return json.dumps(x.get(mk), sort_keys=True)
        return json.dumps(x, sort_keys=True)

    rank = {ident(o): n for n, o in enumerate(order)}
    indexed = list(enumerate(items))
    indexed.sort(key=lambda p: (rank.get(ident(p[1]), len(rank)), p[0]))
    return [x for _, x in indexed]


# -- RFC 6902 JSON patch

_MISSING = object()


def _unescape(tok: str) -> str:
    return tok.replace("~1", "/").replace("~0", "~")


def _split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _patch_error(f"invalid JSON pointer {pointer!r}")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _patch_error(msg: str) -> APIError:
    return APIError(422, "Invalid", f"the server rejected our request due to an error in our request: {msg}")


def _parent(doc: Any, toks: list[str], pointer: str) -> tuple[Any, str]:
    cur = doc
    for t in toks[:-1]:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise _patch_error(f"path {pointer!r} does not exist")
    return cur, toks[-1]


def _get(doc: Any, pointer: str) -> Any:
    cur = doc
    for t in _split(pointer):
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list) and t.isdigit() and int(t) < len(cur):
            cur = cur[int(t)]
        else:
            raise _patch_error(f"path {pointer!r} does not exist")
    return cur


def _add(doc: Any, pointer: str, value: Any) -> Any:
    toks = _split(pointer)
    if not toks:
        return value
    parent, last = _parent(doc, toks, pointer)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _patch_error(f"index out of range in {pointer!r}")
    else:
        raise _patch_error(f"path {pointer!r} does not exist")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    toks = _split(pointer)
    if not toks:
        raise _patch_error("cannot remove the whole document")
    parent, last = _parent(doc, toks, pointer)
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return doc, parent.pop(int(last))
    raise _patch_error(f"path {pointer!r} does not exist")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid json patch operation: {json.dumps(op)}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"json patch {kind} operation at {path!r} has no value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            if _split(path):
                doc, _ = _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            src = op.get("from")
            if not isinstance(src, str):
                raise bad_request(f"json patch {kind} operation has no from")
            if kind == "move":
                doc, val = _remove(doc, src)
            else:
                val = copy.deepcopy(_get(doc, src))
            doc = _add(doc, path, val)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise _patch_error(f"test operation failed at {path!r}")
        else:
            raise bad_request(f"unknown json patch operation {kind!r}")
    return doc
