"""Pull: resolve a reference to one platform manifest, fetch its blobs, unpack, tag.

Layers download on a few threads and each is unpacked as soon as it is complete,
so a pull costs roughly max(download) + last unpack rather than their sum.
Everything happens inside `ImageStore.writing()`, which undoes a failed pull.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import reference
from .blobs import sha256_digest
from .errors import DigestMismatch, ImageError
from .manifest import check_manifest, kind, select_platform
from .registry import Auth, RegistryClient

if TYPE_CHECKING:
    from .store import Image, ImageStore, ProgressFn

WORKERS = 3


def _parse(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise ImageError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


def pull(
    store: ImageStore,
    ref: str,
    auth: Auth = None,
    progress: ProgressFn | None = None,
    platform: tuple[str, str, str | None] | None = None,
) -> Image:
    r = reference.parse(ref)
    client = RegistryClient(r.domain, store.registries, auth)

    def report(digest: str, status: str, done: int = 0, total: int = 0) -> None:
        if progress is not None:
            progress(digest, status, done, total)

    try:
        with store.writing():
            body, media_type, ep = client.get_manifest(r.path, r.object)
            top_digest = sha256_digest(body)
            if r.digest and top_digest != r.digest:
                raise DigestMismatch(f"registry sent a manifest hashing to {top_digest} for {r.digest}")
            doc = _parse(body, f"manifest of {r}")
            if kind(doc, media_type) == "index":
                desc = select_platform(doc, platform)
                store.blobs.put_bytes(body, top_digest)
                body, media_type, ep = client.get_manifest(
                    r.path, desc["digest"], [ep] + [e for e in client.endpoints if e != ep]
                )
                if sha256_digest(body) != desc["digest"]:
                    raise DigestMismatch(f"registry sent a manifest hashing to {sha256_digest(body)} for {desc['digest']}")
                doc = _parse(body, f"platform manifest {desc['digest']}")
                if kind(doc, media_type) != "manifest":
                    raise ImageError(f"{r}: the manifest list points at another list, not an image")
            check_manifest(doc)
            manifest_digest = sha256_digest(body)
            report(manifest_digest, "resolved")
            cfg = doc["config"]
            client.fetch_blob(r.path, cfg["digest"], cfg.get("size"), store.blobs, prefer=ep)
            config = store.blobs.read_json(cfg["digest"])
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            if len(diff_ids) != len(doc["layers"]):
                raise ImageError(f"{r}: image config lists {len(diff_ids)} diff_ids for {len(doc['layers'])} layers")

            def fetch_layer(desc: dict[str, Any], diff_id: str) -> None:
                digest, total = desc["digest"], int(desc.get("size") or 0)
                if store.blobs.exists(digest):
                    report(digest, "exists", total, total)
                else:
                    done = 0
                    report(digest, "downloading", 0, total)

                    def on_bytes(n: int) -> None:
                        nonlocal done
                        done += n
                        report(digest, "downloading", done, total)

                    client.fetch_blob(r.path, digest, desc.get("size"), store.blobs, on_bytes, prefer=ep)
                    report(digest, "downloaded", total, total)
                store.ensure_layer(digest, diff_id, progress)

            with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="pull") as pool:
                futures = [pool.submit(fetch_layer, d, i) for d, i in zip(doc["layers"], diff_ids, strict=True)]
                try:
                    for f in futures:
                        f.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
            img = store.add_manifest(r.key, body, top_digest)
            assert img is not None
            return img
    finally:
        client.close()
