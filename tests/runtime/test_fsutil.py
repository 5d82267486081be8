"""cri.fsutil: atomic record writes and the stat-validated JSON cache the runtime lists from."""

from __future__ import annotations

import os
from pathlib import Path

from cri import fsutil


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    p = tmp_path / "d" / "rec.json"
    fsutil.atomic_write_json(p, {"a": 1})
    ino = p.stat().st_ino
    fsutil.atomic_write_json(p, {"a": 2})
    assert fsutil.read_json(p) == {"a": 2} and p.stat().st_ino != ino  # a new inode, never edited in place
    assert [x.name for x in p.parent.iterdir()] == ["rec.json"]  # no temp file left
    assert fsutil.read_json(tmp_path / "missing.json", {"x": 0}) == {"x": 0}


def test_json_cache_sees_every_replacement_and_isolates_callers(tmp_path: Path) -> None:
    cache = fsutil.JsonCache()
    p = tmp_path / "sandboxes" / ("a" * 64) / "sandbox.json"
    fsutil.atomic_write_json(p, {"state": "ready", "n": [1]})
    first = cache.read(p)
    assert first == {"state": "ready", "n": [1]}
    first["state"] = "mutated by a caller"  # top-level edits of the copy stay out of the cache
    assert cache.read(p)["state"] == "ready"

    fsutil.atomic_write_json(p, {"state": "notready", "n": [1]})  # replaced behind the cache's back
    assert cache.read(p)["state"] == "notready"

    with open(p, "w") as f:  # even an in-place edit that changes the size is noticed
        f.write('{"state": "edited in place, longer"}')
    assert cache.read(p) == {"state": "edited in place, longer"}

    os.unlink(p)
    assert cache.read(p) is None and cache.read(p, {}) == {}


def test_json_cache_forget_drops_only_that_directory(tmp_path: Path) -> None:
    cache = fsutil.JsonCache()
    a, ab = tmp_path / "c" / "ab", tmp_path / "c" / "abc"
    for d in (a, ab):
        fsutil.atomic_write_json(d / "container.json", {"id": d.name})
        cache.read(d / "container.json")
    cache.forget(a)
    assert list(cache._entries) == [str(ab / "container.json")]
