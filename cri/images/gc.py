"""Garbage collection of the image store, and its disk-usage figures.

Content is shared (one blob or layer dir serves every image that names it), so
nothing is deleted when an image is removed; instead the store computes what is
still reachable (references → manifests → config and layers, plus layer dirs a
snapshot mounts) and deletes the rest. Callers hold the exclusive gc lock, so no
writer is half-way through adding something that is not referenced yet.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ImageError

if TYPE_CHECKING:
    from .store import ImageStore

LOCK_PREFIXES = ("blob-", "layer-")


@dataclass
class PruneResult:
    blobs: int = 0
    layers: int = 0
    bytes: int = 0


def entries(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except FileNotFoundError:
        return []


def listing(store: ImageStore) -> tuple[set[str], set[str], set[str]]:
    """Names in blobs/, layers/ and the per-content lock files: what a writer may add."""
    return (
        {p.name for p in entries(store.blobs.dir)},
        {p.name for p in entries(store.layers_dir)},
        {p.name for p in entries(store.lock_dir) if p.name.startswith(LOCK_PREFIXES)},
    )


def live(store: ImageStore) -> tuple[set[str], set[str]]:
    """Blob digests and layer dir names something still needs."""
    from .snapshot import snapshot_layer_dirs

    live_blobs: set[str] = set()
    live_layers: set[str] = set(snapshot_layer_dirs(store.root))
    for entry in store.refs().values():
        live_blobs.update({entry["digest"], entry["manifest"]})
        try:
            manifest = store.doc(entry["manifest"])
            config = store.doc(manifest["config"]["digest"])
        except (ImageError, KeyError):
            continue
        live_blobs.add(manifest["config"]["digest"])
        live_blobs.update(d["digest"] for d in manifest["layers"])
        live_layers.update(d.split(":", 1)[1] for d in (config.get("rootfs") or {}).get("diff_ids") or [])
    return live_blobs, live_layers


def collect(store: ImageStore) -> PruneResult:
    """Delete everything unreachable, and temp files of writers that died."""
    live_blobs, live_layers = live(store)
    result = PruneResult()
    for p in entries(store.blobs.dir):
        temp = p.name.startswith(".")
        if temp or f"sha256:{p.name}" not in live_blobs:
            result.bytes += usage(p)[0]
            result.blobs += 0 if temp else 1
            p.unlink(missing_ok=True)
    for p in entries(store.layers_dir):
        temp = p.name.startswith(".")
        if temp or p.name not in live_layers:
            result.bytes += usage(p)[0]
            result.layers += 0 if temp else 1
            shutil.rmtree(p, ignore_errors=True)
    for p in entries(store.lock_dir):
        if p.name.startswith(LOCK_PREFIXES):
            p.unlink(missing_ok=True)  # nobody holds these under the exclusive gc lock
    return result


def discard_new(store: ImageStore, before: tuple[set[str], set[str], set[str]]) -> None:
    """Undo a failed writer: delete what appeared since `before` and nothing references."""
    blobs, layers, locks = listing(store)
    live_blobs, live_layers = live(store)
    for name in blobs - before[0]:
        if f"sha256:{name}" not in live_blobs:
            (store.blobs.dir / name).unlink(missing_ok=True)
    for name in layers - before[1]:
        if name not in live_layers:
            shutil.rmtree(store.layers_dir / name, ignore_errors=True)
    for name in locks - before[2]:
        (store.lock_dir / name).unlink(missing_ok=True)


def usage(path: Path) -> tuple[int, int]:
    """Allocated bytes and inode count below `path`, each hard-linked inode once."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, 0
    seen = {(st.st_dev, st.st_ino)}
    used = st.st_blocks * 512
    if not os.path.isdir(path) or os.path.islink(path):
        return used, 1
    stack = [str(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    used += st.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return used, len(seen)
