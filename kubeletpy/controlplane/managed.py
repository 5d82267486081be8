"""managedFields bookkeeping and server-side apply.

A field set uses the wire format `fieldsV1` directly: nested dicts whose keys are
`f:<field>`, `k:{"name":"main"}` (an item of a list with a merge key), `v:<json>` (a member
of a set-like scalar list) and `.` (the item itself); an empty dict is a leaf. Set algebra
is done on flattened leaf paths (tuples of those keys), which keeps it short and obviously
correct.

Ownership rules, as in the real API server (simplified where noted):

* an ordinary write (create/update/patch) by manager M makes M own every field it
  changed (operation "Update") and takes those fields away from other managers;
* an apply by M owns exactly the fields in the applied configuration (operation "Apply");
  applying a value that differs from one another manager owns is a conflict (409) unless
  `force=true`, which moves ownership; fields M applied before and leaves out now are
  removed from the object unless someone else still owns them.

Simplification: every list without a merge key is atomic (one leaf).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .errors import APIError
from .patch import MergeKeys, strategic_merge

Path = tuple[str, ...]

# metadata the server owns: never part of a field set
_META_SKIP = frozenset({"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                        "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
                        "generateName"})
_MISSING = object()


def field_set(obj: dict[str, Any], keys: MergeKeys, status: bool) -> dict[str, Any]:
    """The fieldsV1 set of an object: its status only (`status=True`) or everything else."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if (k == "status") != status:
            continue
        if k == "metadata" and isinstance(v, dict):
            meta = {mk: mv for mk, mv in v.items() if mk not in _META_SKIP}
            if meta:
                out["f:metadata"] = _fs(meta, keys, "metadata")
            continue
        out["f:" + k] = _fs_value(v, keys, k)
    return out


def _fs(obj: dict[str, Any], keys: MergeKeys, path: str) -> dict[str, Any]:
    return {"f:" + k: _fs_value(v, keys, f"{path}.{k}") for k, v in obj.items()}


def _fs_value(v: Any, keys: MergeKeys, path: str) -> dict[str, Any]:
    if isinstance(v, dict):
        return _fs(v, keys, path) if v else {}
    if isinstance(v, list) and v:
        mk = keys.key(path)
        if mk and all(isinstance(i, dict) and mk in i for i in v):
            d: dict[str, Any] = {}
            for item in v:
                d["k:" + json.dumps({mk: item[mk]}, separators=(",", ":"))] = {
                    ".": {}, **_fs(item, keys, path + "[]")}
            return d
        if keys.is_set(path) and all(not isinstance(i, dict | list) for i in v):
            return {".": {}, **{"v:" + json.dumps(i, separators=(",", ":")): {} for i in v}}
    return {}


def to_paths(fs: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for k, v in fs.items():
        p = prefix + (k,)
        if not v:
            out.add(p)
        else:
            out |= to_paths(v, p)
    return out


def from_paths(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        cur = root
        for k in p:
            cur = cur.setdefault(k, {})
    return root


def value_at(obj: Any, path: Path) -> Any:
    cur = obj
    for k in path:
        if k == ".":
            return cur
        if k.startswith("f:"):
            if not isinstance(cur, dict) or k[2:] not in cur:
                return _MISSING
            cur = cur[k[2:]]
        elif k.startswith("k:"):
            want = json.loads(k[2:])
            if not isinstance(cur, list):
                return _MISSING
            cur = next((i for i in cur if isinstance(i, dict) and all(i.get(a) == b for a, b in want.items())),
                       _MISSING)
            if cur is _MISSING:
                return cur
        elif k.startswith("v:"):
            val = json.loads(k[2:])
            return val if isinstance(cur, list) and val in cur else _MISSING
    return cur


def _remove_at(obj: Any, path: Path) -> None:
    """Remove the field (or list item, or set member) a path names, if present."""
    if path and path[-1] == ".":
        path = path[:-1]
    if not path:
        return
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [i for i in parent if not (isinstance(i, dict) and all(i.get(a) == b for a, b in want.items()))]
    elif last.startswith("v:") and isinstance(parent, list):
        val = json.loads(last[2:])
        parent[:] = [i for i in parent if i != val]


def path_str(path: Path) -> str:
    """`.spec.containers[name="main"].image`, the form conflict messages use."""
    out = ""
    for k in path:
        if k.startswith("f:"):
            out += "." + k[2:]
        elif k.startswith("k:"):
            want = json.loads(k[2:])
            out += "[" + ",".join(f"{a}={json.dumps(b)}" for a, b in want.items()) + "]"
        elif k.startswith("v:"):
            out += f"[{k[2:]}]"
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Entries:
    """The managedFields list of one object, as (manager, operation, subresource) -> leaf paths."""

    def __init__(self, managed: list[dict[str, Any]] | None) -> None:
        self.entries: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.paths: dict[tuple[str, str, str], set[Path]] = {}
        for e in managed or []:
            if not isinstance(e, dict):
                continue
            k = (str(e.get("manager", "")), str(e.get("operation", "Update")), str(e.get("subresource", "")))
            self.entries[k] = dict(e)
            self.paths[k] = to_paths(e.get("fieldsV1") or {})

    def to_list(self, touched: set[tuple[str, str, str]], api_version: str) -> list[dict[str, Any]]:
        out = []
        for k, paths in self.paths.items():
            if not paths:
                continue
            e = self.entries.get(k) or {}
            if k in touched or not e:
                e = {"manager": k[0], "operation": k[1], "apiVersion": api_version, "time": _now(),
                     "fieldsType": "FieldsV1"}
                if k[2]:
                    e["subresource"] = k[2]
            e["fieldsV1"] = from_paths(paths)
            out.append(e)
        return out


def record_update(old: dict[str, Any] | None, new: dict[str, Any], manager: str, keys: MergeKeys,
                  subresource: str, api_version: str) -> None:
    """Update new.metadata.managedFields for an ordinary write by `manager`."""
    status = subresource == "status"
    meta = new.setdefault("metadata", {})
    entries = Entries(meta.get("managedFields") if old is None else (old.get("metadata") or {}).get("managedFields"))
    new_paths = to_paths(field_set(new, keys, status))
    if old is None:
        changed, gone = new_paths, set()
    else:
        old_paths = to_paths(field_set(old, keys, status))
        gone = old_paths - new_paths
        changed = {p for p in new_paths
                   if p not in old_paths or (p[-1] != "." and value_at(old, p) != value_at(new, p))}
    me = (manager, "Update", subresource)
    if changed or gone:
        for k in entries.paths:
            entries.paths[k] -= gone
            if k != me:
                entries.paths[k] -= changed
        entries.paths.setdefault(me, set()).update(changed)
    meta["managedFields"] = entries.to_list({me} if changed else set(), api_version)


def apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str, force: bool, keys: MergeKeys,
          subresource: str, api_version: str) -> dict[str, Any]:
    """Server-side apply `config` onto `live` (None: create). Returns the new object."""
    status = subresource == "status"
    base = live or {}
    entries = Entries((base.get("metadata") or {}).get("managedFields"))
    me = (manager, "Apply", subresource)
    applied = to_paths(field_set(config, keys, status))
    conflicts: list[tuple[str, Path]] = []
    if live is not None:
        for k, owned in entries.paths.items():
            if k == me or k[2] != subresource:
                continue
            for p in applied & owned:
                if p[-1] == ".":
                    continue
                if value_at(live, p) != value_at(config, p):
                    conflicts.append((k[0], p))
    if conflicts and not force:
        msgs = [f'conflict with "{m}": {path_str(p)}' for m, p in sorted(conflicts)]
        n = len(conflicts)
        raise APIError(409, "Conflict", f"Apply failed with {n} conflict{'s' if n > 1 else ''}: " + "; ".join(msgs),
                       {"causes": [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"',
                                    "field": path_str(p)} for m, p in sorted(conflicts)]})
    for m, p in conflicts:
        for k in entries.paths:
            if k[0] == m and k != me:
                entries.paths[k].discard(p)
    result = strategic_merge(base, config, keys)
    previously = entries.paths.get(me, set())
    others = set().union(*(v for k, v in entries.paths.items() if k != me)) if entries.paths else set()
    for p in sorted(previously - applied - others, key=len, reverse=True):
        if p[-1] == "." and any(q[:len(p) - 1] == p[:-1] for q in others):
            continue
        _remove_at(result, p)
    entries.paths[me] = applied
    result.setdefault("metadata", {})["managedFields"] = entries.to_list({me}, api_version)
    return result
