"""`registries.toml`: mirrors, credentials and the plain-HTTP opt-in per registry host.

Format (every key optional; hosts are spelled as in image references, with a port if any)::

    # /etc/kubeletpy/registries.toml
    [registry."docker.io"]
    mirrors = ["https://mirror.gcr.io", "127.0.0.1:5001"]   # tried in order, then docker.io itself
    username = "me"                                          # basic credentials, also used
    password = "secret"                                      #   at a Bearer token realm
    # token = "..."                                          # or a registry bearer token

    [registry."registry.internal:5000"]
    insecure = true          # allow plain HTTP (and unverified TLS) for this host

    [registry."127.0.0.1:5001"]   # a mirror's own credentials/insecure live in its own table
    insecure = true

A mirror is `host[:port][/prefix]` or a URL; without a scheme it is HTTPS unless the
mirror host is loopback or marked insecure. Registries on `localhost`/`127.0.0.1`/
`[::1]` always speak plain HTTP: local test registries rarely have certificates,
and loopback traffic never leaves the host. Everything else must be HTTPS unless
`insecure = true`, because credentials and unverifiable content would otherwise
cross the network in the clear.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubeletpy.paths import ETC_ROOT

from .errors import ImageError

DEFAULT_PATH = ETC_ROOT / "registries.toml"
DOCKER_HUB_API = "registry-1.docker.io"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True)
class HostConfig:
    mirrors: tuple[str, ...] = ()
    insecure: bool = False
    username: str | None = None
    password: str | None = None
    token: str | None = None

    @property
    def credentials(self) -> tuple[str, str] | str | None:
        if self.username is not None:
            return (self.username, self.password or "")
        return self.token


@dataclass(frozen=True)
class Endpoint:
    """One place to send /v2/ requests for a registry: a mirror or the registry itself."""

    base: str  # scheme://host[:port][/prefix], no trailing slash
    host: str  # host[:port], the key for credentials and insecure lookups
    mirror: bool
    verify_tls: bool = True


def hostname(host: str) -> str:
    """`host[:port]` → host, keeping IPv6 brackets out."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    return hostname(host) in LOOPBACK_HOSTS or hostname(host).startswith("127.")


@dataclass
class RegistriesConfig:
    hosts: dict[str, HostConfig] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> RegistriesConfig:
        """Read the file; a missing default file means "no mirrors, anonymous"."""
        explicit = path is not None
        p = Path(path) if path is not None else DEFAULT_PATH
        try:
            with open(p, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            if explicit:
                raise ImageError(f"registries config {p} does not exist") from None
            return cls(path=None)
        except tomllib.TOMLDecodeError as e:
            raise ImageError(f"registries config {p} is not valid TOML: {e}") from None
        return cls.from_dict(data, p)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> RegistriesConfig:
        hosts: dict[str, HostConfig] = {}
        unknown = set(data) - {"registry"}
        if unknown:
            raise ImageError(f"registries config {path}: unknown top-level keys {sorted(unknown)}")
        for host, tbl in (data.get("registry") or {}).items():
            if not isinstance(tbl, dict):
                raise ImageError(f"registries config {path}: [registry.{host!r}] must be a table")
            bad = set(tbl) - {"mirrors", "insecure", "username", "password", "token"}
            if bad:
                raise ImageError(f"registries config {path}: unknown keys {sorted(bad)} for {host!r}")
            mirrors = tbl.get("mirrors", [])
            if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
                raise ImageError(f"registries config {path}: mirrors for {host!r} must be a list of strings")
            hosts[host] = HostConfig(
                mirrors=tuple(mirrors),
                insecure=bool(tbl.get("insecure", False)),
                username=tbl.get("username"),
                password=tbl.get("password"),
                token=tbl.get("token"),
            )
        return cls(hosts=hosts, path=path)

    def host(self, host: str) -> HostConfig:
        return self.hosts.get(host) or HostConfig()

    def plain_http_ok(self, host: str) -> bool:
        return is_loopback(host) or self.host(host).insecure

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Mirrors in configured order, then the registry itself."""
        out = [self._endpoint(m, mirror=True) for m in self.host(domain).mirrors]
        api_host = DOCKER_HUB_API if domain == "docker.io" else domain
        scheme = "http" if self.plain_http_ok(domain) else "https"
        out.append(Endpoint(f"{scheme}://{api_host}", domain, mirror=False, verify_tls=not self.host(domain).insecure))
        return out

    def _endpoint(self, spec: str, mirror: bool) -> Endpoint:
        if "://" not in spec:
            host = spec.split("/", 1)[0]
            spec = ("http://" if self.plain_http_ok(host) else "https://") + spec
        u = urlsplit(spec)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ImageError(f"registries config: bad mirror endpoint {spec!r}")
        if u.scheme == "http" and not self.plain_http_ok(u.netloc):
            raise ImageError(
                f"registries config: mirror {spec!r} is plain HTTP; mark [registry.{u.netloc!r}] insecure = true"
            )
        return Endpoint(
            f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}",
            u.netloc,
            mirror=mirror,
            verify_tls=not self.host(u.netloc).insecure,
        )
