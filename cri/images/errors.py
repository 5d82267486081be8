"""Exceptions of the image store.

One base class so callers (CLI, CRI server) can turn every store failure into a
user-facing message without catching unrelated bugs.
"""

from __future__ import annotations


class ImageError(Exception):
    """A failure the user can act on; the message is meant to be shown as is."""


class ImageNotFound(ImageError):
    """No image (or manifest/blob in a registry) matches what was asked for."""


class InvalidReference(ImageError):
    """The string cannot be an image reference; raised before any I/O happens."""


class ImageInUse(ImageError):
    """Removing the image would pull it out from under a snapshot/container."""


class UnsafeLayer(ImageError):
    """A layer tar tries to write outside its root (path traversal, symlink tricks)."""


class DigestMismatch(ImageError):
    """Downloaded/imported content does not hash to the digest that named it."""
