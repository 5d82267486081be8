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
        os.utime(d / "container.json", ns=(1, 1))  # old enough to be cached (see RACY_NS)
        cache.read(d / "container.json")
    cache.forget(a)
    assert list(cache._entries) == [str(ab / "container.json")]


def test_json_cache_never_trusts_a_file_younger_than_a_clock_tick(tmp_path: Path) -> None:
    """Same inode, size and mtime can hide a rewrite on coarse-timestamp kernels: fresh files are
    always read again; once old enough they are served from the cache."""
    cache = fsutil.JsonCache()
    p = tmp_path / "r.json"
    p.write_text('{"v": 1}')
    assert cache.read(p) == {"v": 1}
    st = p.stat()
    with open(p, "r+") as f:  # rewrite in place: same inode and size...
        f.write('{"v": 2}')
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the same mtime
    assert cache.read(p) == {"v": 2}
    os.utime(p, ns=(1, 1))
    assert cache.read(p) == {"v": 2} and str(p) in cache._entries
