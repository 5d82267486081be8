"""Import `docker save` tarballs and OCI image-layout tarballs (plain or gzipped).

Archives are untrusted input just like registry responses: every blob is hashed
against the digest that names it before it enters the store, member names are
resolved inside the archive only, and the import runs inside
`ImageStore.writing()` so a bad archive leaves no trace.

Naming: OCI layouts carry names in annotations. `io.containerd.image.name`
(containerd/Docker exports) is a full reference; `org.opencontainers.image.ref.name`
may be a full reference or just a tag (skopeo, umoci), in which case the tag is
put on `name` (the `--name` option) or on `kubeletpy.local/import/<file stem>`.
Images with no name at all are recorded as `<that repo>@<digest>`.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import reference
from .blobs import sha256_digest
from .errors import ImageError, InvalidReference
from .manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    check_manifest,
    kind,
    select_platform,
)

if TYPE_CHECKING:
    from .store import Image, ImageStore

CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
MAX_JSON = 16 << 20


class _Archive:
    def __init__(self, path: Path) -> None:
        try:
            self.tf = tarfile.open(path, "r:*")  # noqa: SIM115
        except (tarfile.TarError, OSError) as e:
            raise ImageError(f"{path} is not a readable tar archive: {e}") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in self.tf.getmembers():
            self.members[posixpath.normpath(m.name.lstrip("/"))] = m

    def close(self) -> None:
        self.tf.close()

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        """Open a member by name, following links only to other members of the archive."""
        name = posixpath.normpath(name.lstrip("/"))
        for _ in range(16):
            m = self.members.get(name)
            if m is None or name.startswith("../"):
                raise ImageError(f"archive member {name!r} is missing")
            if m.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
                continue
            if m.islnk():
                name = posixpath.normpath(m.linkname.lstrip("/"))
                continue
            f = self.tf.extractfile(m)
            if f is None:
                raise ImageError(f"archive member {name!r} is not a file")
            return f
        raise ImageError(f"archive member {name!r}: too many levels of links")

    def read_json(self, name: str) -> Any:
        data = self.open(name).read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise ImageError(f"archive member {name!r} is too large for a JSON document")
        try:
            return json.loads(data)
        except ValueError as e:
            raise ImageError(f"archive member {name!r} is not valid JSON: {e}") from None


def import_archive(store: ImageStore, path: Path, name: str | None = None) -> list[Image]:
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    default_repo = _default_repo(path, name)
    arc = _Archive(path)
    try:
        with store.writing():
            if arc.has("index.json") and arc.has("oci-layout"):
                refs = _import_oci(store, arc, default_repo)
            elif arc.has("manifest.json"):
                refs = _import_docker(store, arc, default_repo)
            else:
                raise ImageError(f"{path} is neither a `docker save` archive nor an OCI image layout")
            if not refs:
                raise ImageError(f"{path} contains no images")
    finally:
        arc.close()
    out: dict[str, Image] = {}
    for r in refs:
        img = store.get(r)
        out[img.id] = img
    return list(out.values())


def _default_repo(path: Path, name: str | None) -> str:
    if name:
        r = reference.parse(name)
        if r.digest or ":" in name.rsplit("/", 1)[-1]:
            raise InvalidReference(f"--name {name!r} must be a repository name without tag or digest")
        return r.name
    stem = path.name.split(".", 1)[0].lower()
    stem = re.sub(r"[^a-z0-9]+", "-", stem).strip("-") or "image"
    return f"kubeletpy.local/import/{stem}"


def _copy_blob(store: ImageStore, arc: _Archive, desc: dict[str, Any]) -> None:
    digest = desc["digest"]
    reference.validate_digest(digest)
    if store.blobs.exists(digest):
        return
    src = arc.open(f"blobs/sha256/{digest.split(':', 1)[1]}")

    def fetch(f: Any) -> None:
        while chunk := src.read(1 << 20):
            f.write(chunk)

    store.blobs.ingest(digest, fetch, desc.get("size"))


def _ref_for(annotations: dict[str, str], default_repo: str, digest: str) -> str:
    full = annotations.get(CONTAINERD_NAME)
    if full:
        return reference.parse(full).key
    tag = annotations.get(OCI_REF_NAME)
    if tag:
        if "/" in tag or tag.count(":") or "@" in tag:
            try:
                return reference.parse(tag).key
            except InvalidReference:
                pass
        if re.match(r"^[\w][\w.-]{0,127}$", tag):
            return f"{default_repo}:{tag}"
    return f"{default_repo}@{digest}"


def _import_oci(store: ImageStore, arc: _Archive, default_repo: str) -> list[str]:
    index = arc.read_json("index.json")
    refs = []
    for desc in index.get("manifests") or []:
        top = desc["digest"]
        _copy_blob(store, arc, desc)
        doc = store.blobs.read_json(top)
        mdesc = desc
        if kind(doc, desc.get("mediaType")) == "index":
            mdesc = select_platform(doc)
            _copy_blob(store, arc, mdesc)
            doc = store.blobs.read_json(mdesc["digest"])
            if kind(doc, mdesc.get("mediaType")) != "manifest":
                raise ImageError(f"index {top} points at another index; nested indexes are not supported")
        check_manifest(doc)
        _copy_blob(store, arc, doc["config"])
        for layer in doc["layers"]:
            _copy_blob(store, arc, layer)
        ref = _ref_for(desc.get("annotations") or {}, default_repo, top)
        store.add_manifest(ref, store.blobs.read(mdesc["digest"]), top)
        refs.append(ref)
    return refs


def _import_docker(store: ImageStore, arc: _Archive, default_repo: str) -> list[str]:
    entries = arc.read_json("manifest.json")
    if not isinstance(entries, list):
        raise ImageError("manifest.json of the docker archive is not a list")
    refs = []
    for entry in entries:
        config_bytes = arc.open(entry["Config"]).read(MAX_JSON + 1)
        config_digest = store.blobs.put_bytes(config_bytes)
        layers = []
        for name in entry.get("Layers") or []:
            src = arc.open(name)
            head = src.read(2)
            src.seek(0)
            digest, size = store.blobs.put_stream(src)
            layers.append(
                {
                    "mediaType": DOCKER_LAYER_GZIP if head == b"\x1f\x8b" else DOCKER_LAYER,
                    "digest": digest,
                    "size": size,
                }
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": layers,
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        tags = [reference.parse(t).key for t in entry.get("RepoTags") or []]
        if not tags:
            tags = [f"{default_repo}@{sha256_digest(manifest_bytes)}"]
        for t in tags:
            store.add_manifest(t, manifest_bytes)
            refs.append(t)
    return refs
