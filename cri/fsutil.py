"""Small file-system helpers shared by every layer that keeps state on disk.

State that must survive a crash is written atomically (temp file in the same
directory, fsync, rename, fsync of the directory), so a reader sees either the old or the new content,
never a torn write. Cross-process exclusion uses flock on a lock file, which the
kernel releases when the holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        # The rename is durable only once the directory entry is: without this a new
        # file's name can vanish on power loss even though its content was fsynced.
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o644) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n", mode)


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


RACY_NS = 20_000_000  # 20 ms: several kernel ticks (jiffies) of timestamp granularity


class JsonCache:
    """read_json for files that are replaced, never edited in place, read far more than written.

    Every record write is temp file + rename, so a new content is a new inode: a hit
    is one stat(2) instead of open + read + JSON decode, which matters when the
    kubelet relists hundreds of containers every second. Validation by (inode,
    mtime, size) keeps it right even if another process replaced the file. Callers
    get a shallow copy of a cached dict, so setting a top-level key before a write
    never leaks into the cache.
    """

    def __init__(self, limit: int = 16384) -> None:
        self._entries: dict[str, tuple[int, int, int, Any]] = {}
        self._limit = limit

    def read(self, path: str | os.PathLike[str], default: Any = None) -> Any:
        key = os.fspath(path)
        try:
            st = os.stat(key)
        except FileNotFoundError:
            self._entries.pop(key, None)
            return default
        hit = self._entries.get(key)
        if hit is not None and hit[:3] == (st.st_ino, st.st_mtime_ns, st.st_size):
            obj = hit[3]
        else:
            obj = read_json(key, default)
            # "Racily clean", as git calls it: a freed inode is reused at once, and with coarse
            # timestamps a same-size rewrite within one tick would look unchanged. Only files
            # older than that are trusted from the cache.
            if time.time_ns() - st.st_mtime_ns > RACY_NS:
                if len(self._entries) >= self._limit:
                    self._entries.clear()
                self._entries[key] = (st.st_ino, st.st_mtime_ns, st.st_size, obj)
        return dict(obj) if isinstance(obj, dict) else obj

    def forget(self, prefix: str | os.PathLike[str]) -> None:
        """Drop entries under `prefix` (a removed directory), so the cache does not grow forever."""
        p = os.fspath(prefix).rstrip("/") + "/"
        for key in list(self._entries):  # list() copies in one step; other threads may insert meanwhile
            if key.startswith(p):
                self._entries.pop(key, None)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if missing) for the duration of the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
