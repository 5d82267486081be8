"""Media types and the choices made on manifests: which platform, which layers.

Docker v2 schema 2 and OCI manifests carry the same information under different
media types, so everything past this module only sees "an index" or "a manifest".
"""

from __future__ import annotations

import platform
from typing import Any

from .errors import ImageError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
LAYER_TYPES = (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_NONDIST_GZIP,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_FOREIGN_GZIP,
)

_ARCH = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", None),
    "i386": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


def host_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) in GOOS/GOARCH terms, as registries label images."""
    machine = platform.machine()
    arch, variant = _ARCH.get(machine, (machine, None))
    return "linux", arch, variant


def kind(doc: dict[str, Any], media_type: str | None = None) -> str:
    """'index' or 'manifest'; the body's mediaType wins, then the header, then the shape."""
    mt = doc.get("mediaType") or media_type or ""
    if mt in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ImageError("docker schema 1 manifests are not supported (the image is too old; re-push it)")
    if mt in INDEX_TYPES:
        return "index"
    if mt in MANIFEST_TYPES:
        return "manifest"
    if "manifests" in doc:
        return "index"
    if "layers" in doc and "config" in doc:
        return "manifest"
    raise ImageError(f"unsupported manifest media type {mt or '(none)'!r}")


def select_platform(index: dict[str, Any], want: tuple[str, str, str | None] | None = None) -> dict[str, Any]:
    """The descriptor for this host from a manifest list / OCI index."""
    os_, arch, variant = want or host_platform()
    candidates = []
    for d in index.get("manifests") or []:
        p = d.get("platform") or {}
        if p.get("os") == os_ and p.get("architecture") == arch:
            candidates.append(d)
    if not candidates:
        have = sorted(
            {
                f"{(d.get('platform') or {}).get('os', '?')}/{(d.get('platform') or {}).get('architecture', '?')}"
                for d in index.get("manifests") or []
            }
        )
        raise ImageError(f"no image for {os_}/{arch} in the manifest list (it has: {', '.join(have) or 'nothing'})")
    if variant:
        for d in candidates:
            if d["platform"].get("variant") == variant:
                return d
    for d in candidates:
        if not d["platform"].get("variant"):
            return d
    return candidates[0]


def check_manifest(doc: dict[str, Any]) -> None:
    """Reject manifests we could not turn into a rootfs before downloading any layer."""
    cfg = doc.get("config")
    if not isinstance(cfg, dict) or "digest" not in cfg:
        raise ImageError("manifest has no config descriptor")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ImageError("manifest has no layers list")
    for layer in layers:
        mt = layer.get("mediaType", "")
        if mt == OCI_LAYER_ZSTD:
            raise ImageError("zstd-compressed layers are not supported (use gzip or uncompressed layers)")
        if mt not in LAYER_TYPES:
            raise ImageError(f"unsupported layer media type {mt!r}")
