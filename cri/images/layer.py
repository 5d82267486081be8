"""Unpack one layer tar into a directory overlayfs can use as a lowerdir.

Layer tars come from registries and archives we do not trust, so extraction never
goes through `tarfile.extractall`: every entry is created relative to an open
directory fd, each parent is opened with O_NOFOLLOW (a symlink planted earlier in
the tar cannot redirect a later write outside the layer), `..` is refused and
hard-link targets must already exist inside the layer. Any refusal raises
`UnsafeLayer` and the caller removes the half-written temp dir, so nothing is left.

OCI/AUFS whiteouts are translated to overlayfs' native form as we go:
`.wh.NAME` becomes a 0/0 character device NAME and `.wh..wh..opq` becomes the
`trusted.overlay.opaque=y` xattr on its directory. Device nodes are skipped: a
container gets its /dev from the runtime, never from an image.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import DigestMismatch, ImageError, UnsafeLayer

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass
class UnpackResult:
    diff_id: str
    size: int  # uncompressed tar bytes
    skipped_devices: list[str] = field(default_factory=list)


class _HashingReader:
    """Hashes the decompressed stream so the diff_id is checked in the same pass."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def open_layer_stream(f: IO[bytes]) -> IO[bytes]:
    """Pick the decompressor from the magic bytes; media types are often wrong in the wild."""
    head = f.read(4)
    f.seek(0)
    if head[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if head == ZSTD_MAGIC:
        raise ImageError("zstd-compressed layers are not supported (use gzip or uncompressed layers)")
    return f


def _split(name: str, what: str = "path") -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"layer entry {what} {name!r} escapes the layer root (contains '..')")
    return parts


class _Extractor:
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.rootfd = os.open(dest, _DIR_FLAGS)
        self.dir_meta: list[tuple[list[str], tarfile.TarInfo]] = []
        self.skipped: list[str] = []

    def close(self) -> None:
        os.close(self.rootfd)

    def open_dir(self, parts: list[str], name: str, create: bool) -> int:
        """Open the directory `parts` below the layer root without following symlinks."""
        fd = os.dup(self.rootfd)
        try:
            for comp in parts:
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISLNK(st.st_mode):
                            raise UnsafeLayer(
                                f"layer entry {name!r} goes through the symlink {comp!r}; refusing to follow it"
                            ) from None
                        raise ImageError(f"layer entry {name!r}: {comp!r} is not a directory") from None
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _clear(pfd: int, base: str, keep_dir: bool) -> None:
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = _split(m.name)
        if not parts:
            if m.isdir():
                self.dir_meta.append(([], m))
            return
        base = parts[-1]
        if base == OPAQUE_MARKER:
            fd = self.open_dir(parts[:-1], m.name, create=True)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, ...): meaningless to overlayfs
        pfd = self.open_dir(parts[:-1], m.name, create=True)
        try:
            if base.startswith(WHITEOUT_PREFIX):
                target = base[len(WHITEOUT_PREFIX) :]
                if target in ("", ".", ".."):
                    raise UnsafeLayer(f"layer entry {m.name!r} is not a valid whiteout")
                self._clear(pfd, target, keep_dir=False)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
                return
            if m.ischr() or m.isblk():
                self.skipped.append(m.name)
                return
            self._clear(pfd, base, keep_dir=m.isdir())
            if m.isdir():
                try:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                except FileExistsError:
                    pass
                self.dir_meta.append((parts, m))
            elif m.isreg():
                self._file(tf, m, pfd, base)
            elif m.issym():
                os.symlink(m.linkname, base, dir_fd=pfd)
                os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
                os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
            elif m.islnk():
                self._hardlink(m, pfd, base)
            elif m.isfifo():
                os.mkfifo(base, 0o600, dir_fd=pfd)
                os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
                os.chmod(base, m.mode & 0o7777, dir_fd=pfd)
            else:
                self.skipped.append(m.name)
        finally:
            os.close(pfd)

    def _file(self, tf: tarfile.TarFile, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        src = tf.extractfile(m)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        try:
            if src is not None:
                while chunk := src.read(1 << 20):
                    os.write(fd, chunk)
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears set-id bits
            self._xattrs(fd, m)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, pfd: int, base: str) -> None:
        tparts = _split(m.linkname, "hard link target")
        if not tparts:
            raise UnsafeLayer(f"layer entry {m.name!r}: hard link to the layer root")
        try:
            tpfd = self.open_dir(tparts[:-1], m.name, create=False)
        except FileNotFoundError:
            raise UnsafeLayer(
                f"layer entry {m.name!r}: hard link target {m.linkname!r} is not inside this layer"
            ) from None
        try:
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeLayer(
                f"layer entry {m.name!r}: hard link target {m.linkname!r} is not inside this layer"
            ) from None
        finally:
            os.close(tpfd)

    @staticmethod
    def _xattrs(fd: int, m: tarfile.TarInfo) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr.") :]
            if not name.startswith(_ALLOWED_XATTR_PREFIXES):
                continue  # trusted.overlay.* from an image could fake whiteouts/redirects
            os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))

    def finish(self) -> None:
        """Directory metadata last: creating children would bump mtimes again."""
        for parts, m in self.dir_meta:
            try:
                fd = self.open_dir(parts, m.name, create=False)
            except (ImageError, FileNotFoundError):
                continue  # a later entry replaced the directory with something else
            try:
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, m.mode & 0o7777)
                self._xattrs(fd, m)
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)


def unpack(stream: IO[bytes], dest: Path, expected_diff_id: str | None = None) -> UnpackResult:
    """Extract the (compressed or plain) tar `stream` into the empty directory `dest`.

    Raises and leaves `dest` partially filled on failure; the caller owns cleanup
    because it owns the temp-dir-then-rename protocol.
    """
    reader = _HashingReader(open_layer_stream(stream))
    ex = _Extractor(dest)
    try:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
                for m in tf:
                    try:
                        ex.entry(tf, m)
                    except ImageError:
                        raise
                    except OSError as e:
                        raise ImageError(f"layer entry {m.name!r}: {e.strerror or e}") from None
            reader.drain()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise ImageError(f"layer is not a valid tar archive: {e}") from None
        ex.finish()
    finally:
        ex.close()
    diff_id = "sha256:" + reader.hash.hexdigest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise DigestMismatch(f"layer content hashes to {diff_id}, but the image config says {expected_diff_id}")
    return UnpackResult(diff_id, reader.count, ex.skipped)
