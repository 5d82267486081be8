"""A client for the OCI distribution API: manifests and blobs, with auth and mirrors.

Only the read side is implemented (pulls). Authentication follows the Docker
token flow: an unauthenticated request gets `401` with
`WWW-Authenticate: Bearer realm=…,service=…,scope=…`; we fetch a token from the
realm (anonymously, or with basic credentials) and retry. `Basic` challenges are
answered with the credentials directly. Tokens are cached per endpoint and scope
for the life of the client (one pull), which is well within their lifetime.

Endpoints are tried in order (mirrors, then the registry): a mirror that is down,
errors, or lacks the content is skipped; the registry's own error is reported.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from .blobs import BlobStore
from .config import Endpoint, RegistriesConfig
from .errors import DigestMismatch, ImageError, ImageNotFound
from .manifest import ACCEPT

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MANIFEST_MAX = 4 << 20  # manifests are small; refuse to buffer anything silly
USER_AGENT = "kubeletpy/0.1"
_CHALLENGE_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')

Auth = tuple[str, str] | str | None


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _CHALLENGE_RE.finditer(rest)}
    return Challenge(scheme.lower(), params)


class _EndpointError(ImageError):
    """This endpoint can't serve the request; another one might."""


class RegistryClient:
    def __init__(self, domain: str, config: RegistriesConfig | None = None, auth: Auth = None) -> None:
        self.domain = domain
        self.config = config or RegistriesConfig()
        self.auth = auth
        self.endpoints = self.config.endpoints(domain)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._authz: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def _credentials(self, ep: Endpoint) -> Auth:
        configured = self.config.host(ep.host).credentials
        if configured is not None:
            return configured
        return None if ep.mirror else self.auth

    # ---- HTTP with auth ----------------------------------------------------------------
    def _request(self, ep: Endpoint, path: str, scope: str, headers: dict[str, str]) -> requests.Response:
        url = f"{ep.base}/v2/{path}"
        creds = self._credentials(ep)
        for attempt in range(2):
            h = dict(headers)
            authz = self._authz.get((ep.base, scope))
            if authz is None and isinstance(creds, str):
                authz = f"Bearer {creds}"
            if authz:
                h["Authorization"] = authz
            try:
                resp = self.session.get(
                    url, headers=h, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), verify=ep.verify_tls
                )
            except requests.exceptions.SSLError as e:
                raise _EndpointError(f"TLS error talking to {ep.base}: {_reason(e)}") from None
            except requests.exceptions.RequestException as e:
                raise _EndpointError(f"cannot reach registry {ep.base}: {_reason(e)}") from None
            if resp.status_code != 401:
                return resp
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            resp.close()
            if attempt == 1 or challenge is None:
                break
            self._authz[(ep.base, scope)] = self._authorize(ep, challenge, scope, creds)
        if creds is None:
            raise _EndpointError(
                f"pull access denied by {ep.host} for {scope}: the repository does not exist or needs "
                "credentials (pass them or add them to registries.toml)"
            )
        raise _EndpointError(f"registry {ep.host} rejected the credentials for {scope} (401 Unauthorized)")

    def _authorize(self, ep: Endpoint, ch: Challenge, scope: str, creds: Auth) -> str:
        if ch.scheme == "basic":
            if not isinstance(creds, tuple):
                raise _EndpointError(f"registry {ep.host} requires a username and password (Basic auth)")
            return requests.auth._basic_auth_str(creds[0], creds[1])
        if ch.scheme != "bearer":
            raise _EndpointError(f"registry {ep.host} wants unsupported auth scheme {ch.scheme!r}")
        realm = ch.params.get("realm")
        if not realm:
            raise _EndpointError(f"registry {ep.host} sent a Bearer challenge without a realm")
        u = urlsplit(realm)
        if u.scheme not in ("http", "https") or (u.scheme == "http" and not self.config.plain_http_ok(u.netloc)
                                                  and not self.config.plain_http_ok(ep.host)):
            raise _EndpointError(f"registry {ep.host}: refusing token realm {realm!r} (plain HTTP to a remote host)")
        scopes = [s for s in ch.params.get("scope", "").split(" ") if s]
        if scope not in scopes:
            scopes.append(scope)
        params: list[tuple[str, str]] = []
        if ch.params.get("service"):
            params.append(("service", ch.params["service"]))
        params.extend(("scope", s) for s in scopes)
        basic = creds if isinstance(creds, tuple) else None
        try:
            r = self.session.get(
                realm, params=params, auth=basic, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), verify=ep.verify_tls
            )
        except requests.exceptions.RequestException as e:
            raise _EndpointError(f"cannot reach token server {realm}: {_reason(e)}") from None
        if r.status_code in (401, 403):
            raise _EndpointError(f"token server {realm} refused {'the credentials' if basic else 'anonymous access'}"
                                 f" for {scope} ({r.status_code})")
        if r.status_code != 200:
            raise _EndpointError(f"token server {realm} answered {r.status_code}")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise _EndpointError(f"token server {realm} returned no token")
        return f"Bearer {token}"

    def _get(self, ep: Endpoint, repo: str, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        return self._request(ep, f"{repo}/{path}", f"repository:{repo}:pull", headers or {})

    # ---- API ---------------------------------------------------------------------------
    def get_manifest(self, repo: str, obj: str, endpoints: list[Endpoint] | None = None) -> tuple[bytes, str, Endpoint]:
        """(body, media type, endpoint that served it) for a tag or digest."""
        last: ImageError | None = None
        for ep in endpoints or self.endpoints:
            try:
                resp = self._get(ep, repo, f"manifests/{obj}", {"Accept": ACCEPT})
            except _EndpointError as e:
                last = e
                continue
            with resp:
                if resp.status_code == 200:
                    body = resp.raw.read(MANIFEST_MAX + 1, decode_content=True)
                    if len(body) > MANIFEST_MAX:
                        last = _EndpointError(f"manifest {repo}:{obj} from {ep.base} is larger than {MANIFEST_MAX}")
                        continue
                    mt = resp.headers.get("Content-Type", "").split(";")[0].strip()
                    return body, mt, ep
                last = _status_error(resp, ep, f"manifest {self.domain}/{repo}:{obj}")
        assert last is not None
        raise last

    def fetch_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        blobs: BlobStore,
        on_bytes: Callable[[int], None] | None = None,
        prefer: Endpoint | None = None,
    ) -> bool:
        """Download `digest` into the blob store (verified); False if it was already there."""
        endpoints = ([prefer] if prefer else []) + [e for e in self.endpoints if e != prefer]
        last: ImageError | None = None
        for ep in endpoints:
            for _attempt in range(2):
                try:
                    return blobs.ingest(digest, lambda f, ep=ep: self._download(ep, repo, digest, f, on_bytes), size)
                except DigestMismatch as e:
                    last = DigestMismatch(f"{e} from {ep.base}")
                    break  # the same endpoint would send the same bad bytes
                except _Truncated as e:
                    last = e  # a dropped connection may not recur: one more try
                except ImageError as e:
                    last = e
                    break
        assert last is not None
        raise last

    def _download(self, ep: Endpoint, repo: str, digest: str, f: Any, on_bytes: Callable[[int], None] | None) -> None:
        resp = self._get(ep, repo, f"blobs/{digest}")
        with resp:
            if resp.status_code != 200:
                raise _status_error(resp, ep, f"blob {digest} of {self.domain}/{repo}")
            try:
                for chunk in resp.iter_content(1 << 16):
                    f.write(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
            except requests.exceptions.RequestException as e:
                raise _Truncated(f"download of blob {digest} from {ep.base} broke off: {_reason(e)}") from None


class _Truncated(_EndpointError):
    pass


def _reason(e: Exception) -> str:
    """The useful tail of requests' nested exception text ("[Errno 111] Connection refused")."""
    inner = e.args[0] if e.args else e
    text = str(getattr(inner, "reason", None) or inner)
    i = text.find("[Errno")
    return text[i:].rstrip(")'\"") if i >= 0 else text


def _status_error(resp: requests.Response, ep: Endpoint, what: str) -> ImageError:
    detail = ""
    try:
        errs = resp.json().get("errors") or []
        detail = "; ".join(f"{x.get('code')}: {x.get('message')}" for x in errs)
    except (ValueError, AttributeError):
        pass
    if resp.status_code == 404:
        return ImageNotFound(f"{what} not found at {ep.base}" + (f" ({detail})" if detail else ""))
    if resp.status_code == 403:
        return _EndpointError(f"access to {what} denied by {ep.base}" + (f" ({detail})" if detail else ""))
    return _EndpointError(f"{what}: {ep.base} answered {resp.status_code} {resp.reason}" + (f" ({detail})" if detail else ""))
