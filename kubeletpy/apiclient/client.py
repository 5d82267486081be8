"""An asyncio Kubernetes REST client on aiohttp.

Why our own and not a PyPI client: the control-plane components need a handful of verbs,
list+watch with resourceVersion resume, and exact Status errors -- a few hundred lines --
and the official Python client is generated, synchronous and heavy.

* HTTPS verified against the cluster CA, bearer token, one pooled connector (keep-alive
  matters: the scheduler binds hundreds of pods a second);
* `list` follows `continue` tokens and returns the list's resourceVersion;
* `watch` streams events; an `ERROR` event carrying a 410 raises `GoneError` so the
  caller re-lists (see `informer.Informer` for the full list-watch loop).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from .config import ClientConfig, load_kubeconfig
from .errors import ApiError, GoneError, TransportError
from .resources import PODS, Resource

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(slots=True)
class WatchEvent:
    type: str  # ADDED MODIFIED DELETED BOOKMARK
    object: dict[str, Any]


class Client:
    """One API server connection pool. Use as `async with Client(cfg) as c:` or call `close()`."""

    def __init__(self, config: ClientConfig, *, user_agent: str = "kubeletpy", max_connections: int = 64,
                 timeout: float = 30.0) -> None:
        self.config = config
        self.user_agent = user_agent
        self.timeout = timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._ssl = config.ssl_context()

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str], context: str | None = None, **kw: Any) -> Client:
        return cls(load_kubeconfig(path, context), **kw)

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(base_url=None, headers=headers, connector=connector,
                                                  json_serialize=lambda o: _dumps(o))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ plumbing

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      timeout: float | None = None) -> Any:
        """One request; the decoded JSON answer, or ApiError built from the Status the server sent."""
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else _dumps(body).encode()
            headers["Content-Type"] = content_type
        q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items()
             if v is not None and v != ""}
        try:
            async with self._sess().request(
                    method, self.config.server + path, params=q, data=data, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError) as e:
            raise TransportError(f"{method} {path}: {type(e).__name__}: {e}") from e
        except TimeoutError as e:
            raise TransportError(f"{method} {path}: timed out") from e
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        if status >= 400:
            raise ApiError.from_status(status, decoded)
        return decoded

    @staticmethod
    def _ns(res: Resource, namespace: str, obj: dict[str, Any] | None = None) -> str:
        if not res.namespaced:
            return ""
        return namespace or ((obj or {}).get("metadata") or {}).get("namespace") or ""

    # ------------------------------------------------------------------ verbs

    async def get(self, res: Resource, name: str, namespace: str = "") -> dict[str, Any]:
        return await self.request("GET", res.path(self._ns(res, namespace), name))

    async def list(self, res: Resource, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", page_size: int = 500) -> dict[str, Any]:
        """Every matching object (following `continue`), as one List with the first page's resourceVersion."""
        params: dict[str, Any] = {"labelSelector": label_selector, "fieldSelector": field_selector,
                                  "limit": page_size or None}
        out: dict[str, Any] | None = None
        while True:
            page = await self.request("GET", res.path(self._ns(res, namespace)), params=params)
            if out is None:
                out = page
                out["items"] = list(page.get("items") or [])
            else:
                out["items"].extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                break
            params["continue"] = cont
        assert out is not None
        (out.setdefault("metadata", {})).pop("continue", None)
        return out

    async def create(self, res: Resource, obj: dict[str, Any], namespace: str = "", *,
                     field_manager: str = "") -> dict[str, Any]:
        body = {"apiVersion": res.api_version, "kind": res.kind, **obj}
        return await self.request("POST", res.path(self._ns(res, namespace, obj)), body=body,
                                  params={"fieldManager": field_manager or self.user_agent})

    async def update(self, res: Resource, obj: dict[str, Any], *, subresource: str = "",
                     field_manager: str = "") -> dict[str, Any]:
        """PUT; conditional when obj carries metadata.resourceVersion (409 ConflictError if stale)."""
        meta = obj.get("metadata") or {}
        body = {"apiVersion": res.api_version, "kind": res.kind, **obj}
        return await self.request("PUT", res.path(self._ns(res, "", obj), meta["name"], subresource), body=body,
                                  params={"fieldManager": field_manager or self.user_agent})

    async def patch(self, res: Resource, name: str, patch: Any, namespace: str = "", *, type: str = "merge",
                    subresource: str = "", field_manager: str = "", force: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = {"fieldManager": field_manager or self.user_agent}
        if force:
            params["force"] = True
        return await self.request("PATCH", res.path(self._ns(res, namespace), name, subresource), body=patch,
                                  content_type=PATCH_CONTENT_TYPES[type], params=params)

    async def delete(self, res: Resource, name: str, namespace: str = "", *, grace_period: int | None = None,
                     preconditions: dict[str, str] | None = None,
                     propagation: str | None = None) -> dict[str, Any]:
        opts: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period is not None:
            opts["gracePeriodSeconds"] = grace_period
        if preconditions:
            opts["preconditions"] = preconditions
        if propagation:
            opts["propagationPolicy"] = propagation
        return await self.request("DELETE", res.path(self._ns(res, namespace), name), body=opts)

    async def bind(self, namespace: str, name: str, node: str, uid: str = "") -> None:
        """POST pods/<name>/binding: what a scheduler does to assign a pod to a node."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Binding",
                                "metadata": {"name": name, "namespace": namespace},
                                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        if uid:
            body["metadata"]["uid"] = uid
        await self.request("POST", PODS.path(namespace, name, "binding"), body=body)

    # ------------------------------------------------------------------ watch

    async def watch(self, res: Resource, namespace: str = "", *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "", timeout_seconds: int = 300,
                    allow_bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        """Events after `resource_version` until the server ends the stream (timeout_seconds).

        Raises GoneError when the server says the version is compacted (HTTP 410 up front
        or an ERROR event in the stream), TransportError when the connection breaks.
        """
        params: dict[str, Any] = {"watch": "true", "resourceVersion": resource_version,
                                  "labelSelector": label_selector, "fieldSelector": field_selector,
                                  "timeoutSeconds": timeout_seconds, "allowWatchBookmarks": allow_bookmarks}
        q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v not in (None, "")}
        url = self.config.server + res.path(self._ns(res, namespace))
        try:
            async with self._sess().get(url, params=q, timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=timeout_seconds + 30)) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    try:
                        decoded = json.loads(raw)
                    except ValueError:
                        decoded = raw.decode(errors="replace")
                    raise ApiError.from_status(resp.status, decoded)
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while True:
                        nl = buf.find(b"\n")
                        if nl < 0:
                            break
                        line, buf = buf[:nl], buf[nl + 1:]
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        typ, obj = ev.get("type", ""), ev.get("object") or {}
                        if typ == "ERROR":
                            err = ApiError.from_status(int(obj.get("code") or 500), obj)
                            if err.code == 410:
                                raise GoneError(410, err.reason or "Expired", err.message, err.status)
                            raise err
                        yield WatchEvent(typ, obj)
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as e:
            raise TransportError(f"watch {res.plural}: {type(e).__name__}: {e}") from e
