"""Content-addressed blobs under `blobs/sha256/<hex>` (OCI image-layout style).

A blob only appears under its final name after its bytes hashed to that name:
content streams into a temp file in the same directory, is hashed on the way,
fsynced and renamed. A crash or a bad download therefore leaves at most a
`.tmp-*` file, which `gc` sweeps. Writers of the same digest serialize on a
per-digest flock so concurrent pulls (threads or processes) fetch it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from cri.fsutil import file_lock

from .errors import DigestMismatch, ImageError
from .reference import validate_digest

CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "blobs" / "sha256"
        self.lock_dir = root / "locks"

    def path(self, digest: str) -> Path:
        validate_digest(digest)
        return self.dir / digest.split(":", 1)[1]

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store (run `kubeletpy images pull` again)") from None

    def read_json(self, digest: str) -> Any:
        try:
            return json.loads(self.read(digest))
        except ValueError as e:
            raise ImageError(f"blob {digest} is not valid JSON: {e}") from None

    @contextlib.contextmanager
    def locked(self, digest: str) -> Iterator[None]:
        with file_lock(self.lock_dir / f"blob-{digest.split(':', 1)[1]}.lock"):
            yield

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data)
        if expected is not None and expected != digest:
            raise DigestMismatch(f"content does not match its digest: expected {expected}, got {digest}")
        if not self.exists(digest):
            self._write(digest, lambda f: f.write(data))
        return digest

    def ingest(
        self,
        digest: str,
        fetch: Callable[[Any], None],
        size: int | None = None,
    ) -> bool:
        """Store the blob `digest` unless present; return True if it was written.

        `fetch(file)` writes the content into `file` (anything with `.write`). The per-digest lock
        makes a second writer wait and then find the blob present.
        """
        path = self.path(digest)
        if path.is_file():
            return False
        with self.locked(digest):
            if path.is_file():
                return False
            self._write(digest, fetch, size)
            return True

    def _write(
        self,
        digest: str,
        fetch: Callable[[Any], Any],
        size: int | None = None,
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                hasher = _HashingWriter(f, digest, size)
                fetch(hasher)
                f.flush()
                os.fsync(f.fileno())
            got = "sha256:" + hasher.hash.hexdigest()
            if size is not None and hasher.count != size:
                raise DigestMismatch(
                    f"blob {digest}: got {hasher.count} bytes, expected {size} (truncated or oversized download)"
                )
            if got != digest:
                raise DigestMismatch(f"blob {digest}: content hashes to {got} (corrupt download?)")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(digest))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_stream(self, src: IO[bytes]) -> tuple[str, int]:
        """Store content whose digest is not known up front (e.g. `docker save` layers)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                hasher = _HashingWriter(f, "(imported)", None)
                while chunk := src.read(CHUNK):
                    hasher.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = "sha256:" + hasher.hash.hexdigest()
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(digest))
            return digest, hasher.count
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def all_digests(self) -> list[str]:
        try:
            return [f"sha256:{p.name}" for p in self.dir.iterdir() if not p.name.startswith(".")]
        except FileNotFoundError:
            return []


class _HashingWriter:
    """A file wrapper that hashes and counts what passes through."""

    def __init__(self, f: IO[bytes], digest: str, limit: int | None) -> None:
        self.f = f
        self.digest = digest
        self.limit = limit
        self.hash = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            # stop a misbehaving server from filling the disk before the size check
            raise DigestMismatch(f"blob {self.digest}: more than the {self.limit} bytes its descriptor declares")
        return self.f.write(data)
