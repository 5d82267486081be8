"""The image store: pull/import images, unpack layers, mount container rootfs.

See store.py for the on-disk layout and locking, snapshot.py for rootfs mounts,
config.py for the registries.toml format.
"""

from .errors import DigestMismatch, ImageError, ImageInUse, ImageNotFound, InvalidReference, UnsafeLayer
from .store import Image, ImageStore, PruneResult

__all__ = [
    "DigestMismatch",
    "Image",
    "ImageError",
    "ImageInUse",
    "ImageNotFound",
    "ImageStore",
    "InvalidReference",
    "PruneResult",
    "UnsafeLayer",
]
