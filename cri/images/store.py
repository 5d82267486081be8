"""The image store: references → manifests → blobs, plus unpacked layer dirs.

Layout under `<root>/images` (OCI image-layout style, so it can be inspected with
ordinary tools)::

    blobs/sha256/<hex>     manifests, indexes, configs, compressed layers (verified)
    layers/<diff-id hex>/  a layer unpacked once, in overlayfs lowerdir form
    index.json             {"refs": {"docker.io/library/busybox:latest":
                                     {"manifest": "sha256:…", "digest": "sha256:…"}}}
    locks/                 flock files

`digest` is what the reference resolved to (an index for multi-arch images) and
`manifest` is the platform manifest actually used. Layer dirs are keyed by the
uncompressed diff_id, not by chain: an overlay lowerdir only holds its own
changes, so the same dir serves every image that contains that layer.

Locking, always taken in this order so nothing deadlocks:
`gc.lock` (shared by writers and snapshot creation, exclusive for rm/prune, so
GC never deletes a blob a pull has fetched but not yet referenced) → per-blob /
per-layer locks (a second pull of the same content waits, then finds it) →
`index.lock` (short read-modify-write of index.json). Readers take no lock:
every file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri.fsutil import atomic_write_json, file_lock, read_json
from kubeletpy.paths import STATE_ROOT

from . import gc, reference
from . import layer as layerlib
from .blobs import BlobStore
from .config import RegistriesConfig
from .errors import ImageError, ImageInUse, ImageNotFound, InvalidReference
from .gc import PruneResult
from .manifest import kind

_HEX_PREFIX_RE = re.compile(r"^(?:sha256:)?([0-9a-f]{3,64})$")
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Image:
    id: str  # "sha256:<config digest hex>", the image ID CRI and Docker show
    manifest_digest: str
    repo_tags: list[str]
    repo_digests: list[str]
    config: dict[str, Any]  # the whole OCI image config; runtime settings are under config["config"]
    size: int  # compressed bytes: config + layers, what a pull transfers
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    diff_ids: list[str] = field(default_factory=list)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def runtime_config(self) -> dict[str, Any]:
        """config.Env/Entrypoint/Cmd/WorkingDir/User/StopSignal..., `{}` when absent."""
        return dict(self.config.get("config") or {})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "manifest_digest": self.manifest_digest,
            "repo_tags": self.repo_tags,
            "repo_digests": self.repo_digests,
            "size": self.size,
            "layers": [
                {"digest": d["digest"], "size": d.get("size"), "media_type": d.get("mediaType"), "diff_id": diff}
                for d, diff in zip(self.layers, self.diff_ids, strict=False)
            ],
            "manifest": self.manifest,
            "config": self.config,
        }


ProgressFn = Callable[..., None]


class ImageStore:
    def __init__(
        self,
        root: str | os.PathLike[str] = STATE_ROOT,
        registries: RegistriesConfig | str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.dir = self.root / "images"
        self.blobs = BlobStore(self.dir)
        self.layers_dir = self.dir / "layers"
        self.index_path = self.dir / "index.json"
        self.lock_dir = self.dir / "locks"
        self._registries_arg = registries
        self._registries: RegistriesConfig | None = registries if isinstance(registries, RegistriesConfig) else None
        self._doc_cache: dict[str, Any] = {}

    @property
    def registries(self) -> RegistriesConfig:
        """Loaded on first pull, so a broken registries.toml can't stop local-only use of the store."""
        if self._registries is None:
            arg = self._registries_arg
            self._registries = RegistriesConfig.load(None if isinstance(arg, RegistriesConfig) else arg)
        return self._registries

    # ---- locks -------------------------------------------------------------------------
    @contextlib.contextmanager
    def gc_lock(self, exclusive: bool = False) -> Iterator[None]:
        with file_lock(self.lock_dir / "gc.lock", shared=not exclusive):
            yield

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the shared gc lock while adding content; on failure, take back what was added.

        Whatever appeared in blobs/ or layers/ since the start and is referenced by
        nothing is deleted under the exclusive lock (no other writer is mid-way
        then), so a failed pull or import leaves the store as it found it.
        """
        before = gc.listing(self)
        try:
            with self.gc_lock():
                yield
        except BaseException:
            with contextlib.suppress(OSError), self.gc_lock(exclusive=True):
                gc.discard_new(self, before)
            raise

    # ---- index -------------------------------------------------------------------------
    def refs(self) -> dict[str, dict[str, str]]:
        data = read_json(self.index_path, None) or {}
        return dict(data.get("refs") or {})

    def _update_refs(self, fn: Callable[[dict[str, dict[str, str]]], None]) -> None:
        with file_lock(self.lock_dir / "index.lock"):
            refs = self.refs()
            fn(refs)
            atomic_write_json(self.index_path, {"refs": refs})

    def tag(self, ref: str, manifest_digest: str, digest: str | None = None) -> None:
        """Point `ref` at a manifest already in the blob store."""
        key = reference.parse(ref).key
        if not self.blobs.exists(manifest_digest):
            raise ImageNotFound(f"manifest {manifest_digest} is not in the store")
        entry = {"manifest": manifest_digest, "digest": digest or manifest_digest}

        def set_ref(refs: dict[str, dict[str, str]]) -> None:
            refs[key] = entry

        self._update_refs(set_ref)

    # ---- reading images ----------------------------------------------------------------
    def doc(self, digest: str) -> Any:
        """Parsed JSON blob; blobs are immutable so the cache never goes stale."""
        doc = self._doc_cache.get(digest)
        if doc is None:
            doc = self.blobs.read_json(digest)
            self._doc_cache[digest] = doc
        return doc

    def _build(self, manifest_digest: str, refs: dict[str, dict[str, str]]) -> Image:
        manifest = self.doc(manifest_digest)
        config_digest = manifest["config"]["digest"]
        config = self.doc(config_digest)
        tags: list[str] = []
        digests: set[str] = set()
        for key, entry in refs.items():
            if entry["manifest"] != manifest_digest:
                continue
            name = _ref_name(key)
            if "@" not in key:
                tags.append(key)
            digests.add(f"{name}@{entry['digest']}")
        size = int(manifest["config"].get("size", 0)) + sum(int(x.get("size", 0)) for x in manifest["layers"])
        return Image(
            id=config_digest,
            manifest_digest=manifest_digest,
            repo_tags=sorted(tags),
            repo_digests=sorted(digests),
            config=config,
            size=size,
            manifest=manifest,
            diff_ids=list((config.get("rootfs") or {}).get("diff_ids") or []),
        )

    def list(self) -> list[Image]:
        refs = self.refs()
        by_id: dict[str, Image] = {}
        for manifest_digest in sorted({e["manifest"] for e in refs.values()}):
            try:
                img = self._build(manifest_digest, refs)
            except ImageError:
                continue  # a ref whose blobs vanished (manual deletion): skip, prune can fix it
            prev = by_id.get(img.id)
            if prev is None:
                by_id[img.id] = img
            else:  # two manifests, one config: one image, as Docker and CRI see it
                prev.repo_tags = sorted(set(prev.repo_tags) | set(img.repo_tags))
                prev.repo_digests = sorted(set(prev.repo_digests) | set(img.repo_digests))
        return sorted(by_id.values(), key=lambda i: (i.repo_tags[:1] or [i.id], i.id))

    def get(self, ref_or_id: str) -> Image:
        """Look up by reference (any normalizable spelling), image ID, manifest digest or ID prefix."""
        refs = self.refs()
        s = ref_or_id.strip()
        manifest_digest = None
        if reference.is_digest(s):
            manifest_digest = self._find_digest(s, refs)
        else:
            try:
                r = reference.parse(s)
            except InvalidReference:
                r = None
            if r is not None:
                entry = refs.get(r.key)
                if entry is None and r.digest:
                    entry = next(
                        (
                            e
                            for k, e in refs.items()
                            if _ref_name(k) == r.name
                            and r.digest in (e["digest"], e["manifest"])
                        ),
                        None,
                    )
                if entry is not None:
                    manifest_digest = entry["manifest"]
            if manifest_digest is None and (m := _HEX_PREFIX_RE.match(s)):
                manifest_digest = self._find_id_prefix(m.group(1), refs)
            elif r is None and manifest_digest is None:
                reference.parse(s)  # re-raise the parse error: it says what is wrong
        if manifest_digest is None:
            raise ImageNotFound(f"image {ref_or_id!r} not found (pull or import it first)")
        img = self._build(manifest_digest, refs)
        for other in self.list():
            if other.id == img.id:  # merge tags of sibling manifests with the same config
                img.repo_tags, img.repo_digests = other.repo_tags, other.repo_digests
        return img

    def _find_digest(self, digest: str, refs: dict[str, dict[str, str]]) -> str | None:
        for entry in refs.values():
            if digest in (entry["manifest"], entry["digest"]):
                return entry["manifest"]
        for md in {e["manifest"] for e in refs.values()}:
            with contextlib.suppress(ImageError, KeyError):
                if self.doc(md)["config"]["digest"] == digest:
                    return md
        return None

    def _find_id_prefix(self, prefix: str, refs: dict[str, dict[str, str]]) -> str | None:
        hits: dict[str, str] = {}
        for md in {e["manifest"] for e in refs.values()}:
            with contextlib.suppress(ImageError, KeyError):
                cid = self.doc(md)["config"]["digest"]
                if cid.split(":", 1)[1].startswith(prefix):
                    hits.setdefault(cid, md)
        if len(hits) > 1:
            raise ImageError(f"image ID prefix {prefix!r} is ambiguous ({len(hits)} images match)")
        return next(iter(hits.values()), None)

    # ---- layers ------------------------------------------------------------------------
    def layer_path(self, diff_id: str) -> Path:
        reference.validate_digest(diff_id)
        return self.layers_dir / diff_id.split(":", 1)[1]

    def layer_dirs(self, img: Image) -> list[Path]:
        """Unpacked layer dirs, lowest first; unpacks any that are missing."""
        if len(img.diff_ids) != len(img.layers):
            raise ImageError(f"image {img.id}: config lists {len(img.diff_ids)} diff_ids for {len(img.layers)} layers")
        out = []
        for desc, diff_id in zip(img.layers, img.diff_ids, strict=True):
            path = self.layer_path(diff_id)
            if not path.is_dir():
                with self.gc_lock():
                    self.ensure_layer(desc["digest"], diff_id)
            out.append(path)
        return out

    def ensure_layer(self, blob_digest: str, diff_id: str, progress: ProgressFn | None = None) -> bool:
        """Unpack the layer blob into layers/<diff_id> unless done; True if it unpacked now.

        Callers hold the shared gc lock.
        """
        final = self.layer_path(diff_id)
        if final.is_dir():
            return False
        with file_lock(self.lock_dir / f"layer-{final.name}.lock"):
            if final.is_dir():
                return False
            if progress:
                progress(blob_digest, "unpacking", 0, 0)
            self.layers_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.layers_dir))
            try:
                os.chmod(tmp, 0o755)
                with open(self.blobs.path(blob_digest), "rb") as f:
                    layerlib.unpack(f, tmp, diff_id)
                _syncfs(tmp)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if progress:
                progress(blob_digest, "unpacked", 0, 0)
            return True

    # ---- adding images -----------------------------------------------------------------
    def pull(
        self,
        ref: str,
        auth: tuple[str, str] | str | None = None,
        progress: ProgressFn | None = None,
        platform: tuple[str, str, str | None] | None = None,
    ) -> Image:
        """Pull `ref` from its registry (or a mirror) and unpack it.

        `progress(digest, status, done, total)` is called from worker threads;
        statuses: resolved, exists, downloading, downloaded, unpacking, unpacked.
        """
        from .pull import pull

        return pull(self, ref, auth=auth, progress=progress, platform=platform)

    def import_archive(self, path: str | os.PathLike[str], name: str | None = None) -> list[Image]:
        """Import a `docker save` or OCI-layout tarball (optionally gzipped)."""
        from .importer import import_archive

        return import_archive(self, Path(path), name=name)

    def build_busybox(self, ref: str = "kubeletpy.local/busybox:latest", busybox: str = "/bin/busybox") -> Image:
        """Build a one-layer busybox image from the host binary; same input → same digest."""
        from .busybox import build

        return build(self, ref=ref, busybox=busybox)

    def add_manifest(
        self,
        ref: str | None,
        manifest_bytes: bytes,
        top_digest: str | None = None,
        progress: ProgressFn | None = None,
    ) -> Image | None:
        """Record a manifest whose config and layer blobs are in the store; unpack it; tag it.

        Callers are inside `writing()`.
        """
        manifest_digest = self.blobs.put_bytes(manifest_bytes)
        manifest = self.doc(manifest_digest)
        kind(manifest)
        config = self.doc(manifest["config"]["digest"])
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(manifest["layers"]):
            raise ImageError("image config diff_ids do not match the manifest's layers")
        for desc, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            self.ensure_layer(desc["digest"], diff_id, progress)
        if ref is None:
            return None
        self.tag(ref, manifest_digest, top_digest)
        return self.get(reference.parse(ref).key)

    # ---- removal and GC ----------------------------------------------------------------
    def remove(self, ref: str, force: bool = False) -> list[str]:
        """Untag `ref`; the image's content goes when no reference is left.

        Given an image ID or digest, every reference of that image goes. Refuses
        (ImageInUse) to remove the last reference of an image a snapshot uses,
        unless `force`; forced removal keeps the layer dirs the snapshots mount.
        """
        from .snapshot import snapshot_users

        with self.gc_lock(exclusive=True):
            img = self.get(ref)
            refs = self.refs()
            mine = [k for k, e in refs.items() if self._manifest_config(e["manifest"]) == img.id]
            try:
                key = reference.parse(ref).key
            except InvalidReference:
                key = None
            if key is not None and key in refs:
                doomed = [key]
            elif key is not None and "@" in key:
                r = reference.parse(ref)
                doomed = [
                    k
                    for k in mine
                    if _ref_name(k) == r.name and r.digest in (refs[k]["digest"], refs[k]["manifest"])
                ]
            else:
                doomed = mine
            if set(doomed) >= set(mine) and not force:
                users = snapshot_users(self.root).get(img.id, [])
                if users:
                    raise ImageInUse(
                        f"image {ref} ({img.id[:19]}) is in use by container(s) {', '.join(sorted(users))}; "
                        "remove them first"
                    )

            def drop(r: dict[str, dict[str, str]]) -> None:
                for k in doomed:
                    r.pop(k, None)

            self._update_refs(drop)
            self._collect()
            return doomed

    def _manifest_config(self, manifest_digest: str) -> str | None:
        try:
            return str(self.doc(manifest_digest)["config"]["digest"])
        except (ImageError, KeyError):
            return None

    def prune(self) -> PruneResult:
        """Delete blobs and layer dirs no reference or snapshot needs, and stale temp files."""
        with self.gc_lock(exclusive=True):
            return self._collect()

    def _collect(self) -> PruneResult:
        result = gc.collect(self)
        self._doc_cache.clear()
        return result

    # ---- usage -------------------------------------------------------------------------
    def fs_usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by the image store, for CRI ImageFsInfo."""
        return gc.usage(self.dir)

    @property
    def mountpoint(self) -> Path:
        return self.dir


def _ref_name(key: str) -> str:
    """`name:tag` or `name@digest` → name."""
    return key.split("@", 1)[0] if "@" in key else key.rsplit(":", 1)[0]


def _syncfs(path: Path) -> None:
    """Flush an unpacked layer before it becomes visible, so a crash can't expose a torn one."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _libc.syncfs(fd)
    finally:
        os.close(fd)
