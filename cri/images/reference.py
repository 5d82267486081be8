"""Image references, normalized the way Docker and containerd do it.

Two spellings of the same image must map to one key in the store, or `busybox`
and `docker.io/library/busybox:latest` would be pulled twice and `rm` of one
would leave the other behind. The grammar follows the distribution project's
reference grammar; it is re-stated here rather than loosened so typos fail early
with a message that says what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = {"index.docker.io", "registry-1.docker.io"}
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_COMPONENT_RE = re.compile(rf"^{_COMPONENT}$")
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def key(self) -> str:
        """The store key: a digest wins over a tag, because the digest is what gets pulled."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"

    @property
    def object(self) -> str:
        """What to ask the registry's /manifests/ endpoint for."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)


def validate_digest(digest: str) -> str:
    if digest.startswith("sha256:") and not _SHA256_RE.match(digest):
        raise InvalidReference(f"invalid digest {digest!r}: sha256 wants 64 lowercase hex characters")
    if not _DIGEST_RE.match(digest):
        raise InvalidReference(f"invalid digest {digest!r}: want <algorithm>:<hex>")
    if not digest.startswith("sha256:"):
        raise InvalidReference(f"unsupported digest algorithm in {digest!r}: only sha256 is supported")
    return digest


def parse(ref: str) -> Reference:
    """Parse and normalize `ref`; raise InvalidReference saying which part is wrong."""
    if not isinstance(ref, str) or not ref:
        raise InvalidReference("invalid reference: empty string")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise InvalidReference(f"invalid reference {ref!r}: contains whitespace")
    if _HEX64_RE.match(ref):
        raise InvalidReference(f"invalid reference {ref!r}: a 64-character hex string is an image ID, not a name")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        validate_digest(digest)
    # A ':' after the last '/' is a tag separator; before it, it's a port.
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid reference {ref!r}: bad tag {tag!r}")
    if not rest:
        raise InvalidReference(f"invalid reference {ref!r}: missing repository name")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, remainder
        if not _DOMAIN_RE.match(domain):
            raise InvalidReference(f"invalid reference {ref!r}: bad registry host {domain!r}")
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    for comp in path.split("/"):
        if not _COMPONENT_RE.match(comp):
            if comp.lower() != comp:
                raise InvalidReference(f"invalid reference {ref!r}: repository name must be lowercase")
            raise InvalidReference(f"invalid reference {ref!r}: bad path component {comp!r}")
    if len(f"{domain}/{path}") > NAME_TOTAL_MAX:
        raise InvalidReference(f"invalid reference {ref!r}: repository name longer than {NAME_TOTAL_MAX}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_digest(s: str) -> bool:
    return bool(_SHA256_RE.match(s))
