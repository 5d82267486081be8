"""Per-container overlayfs root filesystems on top of the store's layer dirs.

Each snapshot is `<root>/snapshots/<key>/{upper,work,rootfs}` plus a small
`snapshot.json` naming the image and layer dirs it uses; that record is what makes
`ImageStore.remove` refuse and GC keep the layers. The record is written before
the mount and removed after the unmount, so a crash in between leaves a record
that `remove(key)` (or `cleanup()`) can still finish, never an untracked mount.

mount(2) is called directly through libc: forking /bin/mount would cost more than
the whole 5 ms budget for preparing a snapshot.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from cri.fsutil import file_lock, read_json
from kubeletpy.paths import STATE_ROOT

from .errors import ImageError
from .store import Image, ImageStore

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_MOUNT_DATA = 4095  # the kernel copies at most one page of mount options


def _snapshots_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root) / "snapshots"


def _records(root: str | os.PathLike[str]) -> dict[str, dict]:
    out = {}
    d = _snapshots_dir(root)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return {}
    for name in names:
        rec = read_json(d / name / "snapshot.json")
        if rec:
            out[name] = rec
    return out


def snapshot_users(root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """image id → snapshot keys using it (the store's "in use" check)."""
    users: dict[str, list[str]] = {}
    for key, rec in _records(root).items():
        users.setdefault(rec["image"], []).append(key)
    return users


def snapshot_layer_dirs(root: str | os.PathLike[str]) -> set[str]:
    """Layer dir names mounted by some snapshot: GC must keep them even if untagged."""
    return {Path(p).name for rec in _records(root).values() for p in rec.get("layers", [])}


def mount_overlay(lowers: list[Path], upper: Path, work: Path, target: Path) -> None:
    # overlayfs lists lowerdirs top-most first
    data = f"lowerdir={':'.join(str(p) for p in reversed(lowers))},upperdir={upper},workdir={work}"
    if len(data) <= MAX_MOUNT_DATA:
        if _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, data.encode()) != 0:
            err = ctypes.get_errno()
            raise ImageError(f"mounting the overlay rootfs at {target} failed: {os.strerror(err)}")
        return
    # Many layers: the options exceed the one page the kernel copies. Lowerdirs relative
    # to the layers dir are ~3x shorter, but relative paths resolve against the caller's
    # cwd, and chdir in a threaded daemon would move every thread; so a child does it.
    base = lowers[0].parent
    if any(p.parent != base for p in lowers):
        raise ImageError(f"too many layers ({len(lowers)}) for one overlay mount")
    rel = (
        f"lowerdir={':'.join(p.name for p in reversed(lowers))},"
        f"upperdir={os.path.relpath(upper, base)},workdir={os.path.relpath(work, base)}"
    )
    if len(rel) > MAX_MOUNT_DATA:
        raise ImageError(f"too many layers ({len(lowers)}) for one overlay mount (options exceed a page)")
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", rel, str(target)], cwd=base,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError(f"mounting the overlay rootfs at {target} failed: {r.stderr.strip()}")


def umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not mounted (anymore)
        if err == errno.EBUSY:  # something still holds it: detach so the tree can go
            if _libc.umount2(str(target).encode(), MNT_DETACH) == 0:
                return
            err = ctypes.get_errno()
        raise ImageError(f"unmounting {target} failed: {os.strerror(err)}")


def is_mounted(target: Path) -> bool:
    try:
        return os.stat(target).st_dev != os.stat(target.parent).st_dev
    except FileNotFoundError:
        return False


class Snapshotter:
    def __init__(self, root: str | os.PathLike[str] = STATE_ROOT, store: ImageStore | None = None) -> None:
        self.root = Path(root)
        self.store = store or ImageStore(root)
        self.dir = _snapshots_dir(self.root)

    def _path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ImageError(f"invalid snapshot key {key!r}: use letters, digits, '.', '_' and '-'")
        return self.dir / key

    def prepare(self, key: str, img: Image) -> Path:
        """Mount a fresh writable rootfs for `key` from `img`; returns the mounted dir."""
        path = self._path(key)
        lowers = self.store.layer_dirs(img)
        if not lowers:
            raise ImageError(f"image {img.id} has no layers to mount")
        rootfs = path / "rootfs"
        with self.store.gc_lock():  # the image can't be removed between check and record
            try:
                os.makedirs(self.dir, exist_ok=True)
                os.mkdir(path, 0o711)
            except FileExistsError:
                raise ImageError(f"snapshot {key!r} already exists") from None
            try:
                os.mkdir(path / "upper", 0o755)
                os.mkdir(path / "work", 0o700)
                os.mkdir(rootfs, 0o755)
                record = {"image": img.id, "layers": [str(p) for p in lowers]}
                tmp = path / ".snapshot.json.tmp"
                tmp.write_text(json.dumps(record))
                os.rename(tmp, path / "snapshot.json")
                if not all(p.is_dir() for p in lowers):
                    raise ImageError(f"image {img.id} was removed while preparing snapshot {key!r}")
                mount_overlay(lowers, path / "upper", path / "work", rootfs)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise
        return rootfs

    def mounts(self, key: str) -> Path:
        return self._path(key) / "rootfs"

    def remove(self, key: str) -> None:
        """Unmount and delete; a missing snapshot is fine (idempotent for CRI retries)."""
        path = self._path(key)
        if not path.exists():
            return
        with file_lock(self.store.lock_dir / "snapshots.lock"):
            umount(path / "rootfs")
            # the record goes last: until the tree is gone its layers must stay
            for sub in ("upper", "work", "rootfs"):
                shutil.rmtree(path / sub, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path / "snapshot.json")
            shutil.rmtree(path, ignore_errors=True)

    def list(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.dir) if (self.dir / n / "snapshot.json").exists())
        except FileNotFoundError:
            return []

    def image_of(self, key: str) -> str | None:
        rec = read_json(self._path(key) / "snapshot.json")
        return rec["image"] if rec else None

    def cleanup(self) -> list[str]:
        """Remove half-prepared snapshot dirs (no record) left by a crash."""
        removed = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        for n in names:
            p = self.dir / n
            if not (p / "snapshot.json").exists():
                umount(p / "rootfs")
                shutil.rmtree(p, ignore_errors=True)
                removed.append(n)
        return removed
