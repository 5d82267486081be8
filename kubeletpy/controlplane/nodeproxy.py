"""pods/{log,exec,attach,portforward}: the API server's proxy to the node agent (the kubelet's :10250).

As the real API server does: find the pod, its `spec.nodeName`, that Node's address
(`status.addresses`: InternalIP, else Hostname) and agent port
(`status.daemonEndpoints.kubeletEndpoint.Port`), then call the agent's kubelet URLs:

    pods/<p>/log?...          -> GET  /containerLogs/<ns>/<p>/<container>?...   (streamed back)
    pods/<p>/exec?...         -> /exec/<ns>/<p>/<container>?...                 (upgrade, spliced)
    pods/<p>/attach?...       -> /attach/<ns>/<p>/<container>?...               (upgrade, spliced)
    pods/<p>/portforward?...  -> /portForward/<ns>/<p>?port=...                 (upgrade, spliced)

Streams are proxied at the byte level, like the real server's upgrade-aware proxy: the
client's upgrade request (websocket or SPDY/3.1, with its protocol offers) is forwarded to
the agent; once the agent answers 101, that answer goes back to the client and the two
sockets are spliced. So every protocol the agent speaks (remotecommand v1..v5 over SPDY or
websocket, port-forward over SPDY or SPDY-in-websocket) passes through unchanged, and the
agent's own refusal (a non-101) reaches the client as a Status, which is what makes kubectl
fall back from websocket to SPDY.

Authentication to the agent: a client certificate from the cluster CA for
`kube-apiserver-kubelet-client` (group `system:masters`), the identity kubeadm gives the real
API server's kubelet client certificate (`<data-dir>/pki/apiserver-kubelet-client.{crt,key}`).
Unlike a bearer token, nothing the agent receives lets it act as the API server.

TLS to the agent: the hop is verified against the cluster CA when the agent's certificate
is signed by it (an agent gets one through a CertificateSigningRequest, see
kubeletpy/agent/certificate.py), and otherwise not verified (the real API server's default
without --kubelet-certificate-authority). An agent still on its self-signed certificate is
checked again after INSECURE_RECHECK seconds, so the hop tightens once its certificate is issued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from cri.streaming.server import HijackedResponse

from . import kinds
from .errors import APIError, bad_request
from .pki import KUBELET_SERVING_CA_NAME
from .registry import Registry

log = logging.getLogger("kubeletpy.controlplane.nodeproxy")

DEFAULT_AGENT_PORT = 10250
CONNECT_TIMEOUT = 10.0
LOG_PARAMS = ("follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes")
INT_LOG_PARAMS = ("tailLines", "sinceSeconds", "limitBytes")
# request headers that make up an upgrade; everything else (Authorization first) stays here
_UPGRADE_HEADERS = ("connection", "upgrade", "x-stream-protocol-version", "sec-websocket-key",
                    "sec-websocket-version", "sec-websocket-protocol")
HIGH_WATER = 256 * 1024
INSECURE_RECHECK = 30.0


def backend_error(node: str, url: str, e: BaseException) -> APIError:
    what = str(e) or type(e).__name__
    return APIError(502, "InternalError", f'error dialing backend: node "{node}" agent at {url} is unreachable: {what}')


class Target:
    """Where one pod's agent is, and which container a request means."""

    def __init__(self, pod: dict[str, Any], node: str, host: str, port: int) -> None:
        self.pod = pod
        self.node = node
        self.host = host
        self.port = port

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


class NodeProxy:
    def __init__(self, registry: Registry, client_cert: tuple[Path, Path] | None, ca_pem: bytes) -> None:
        self.registry = registry
        self._verified: dict[tuple[str, int, str], tuple[ssl.SSLContext, float]] = {}
        self._strict = ssl.create_default_context(cadata=ca_pem.decode())
        self._strict.set_alpn_protocols(["http/1.1"])
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE
        self._insecure.set_alpn_protocols(["http/1.1"])
        if client_cert is not None:
            for ctx in (self._strict, self._insecure):
                ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))

    # ------------------------------------------------------------------ lookup

    async def target(self, ns: str, name: str) -> Target:
        pod = await self.registry.get(kinds.POD, ns, name)
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if not node:
            raise bad_request(f"pod {name} does not have a host assigned")
        node_obj = await self.registry.get(kinds.NODE, "", node)  # a missing node: 404, as the real server
        status = node_obj.get("status") or {}
        addresses = status.get("addresses") or []
        host = ""
        for typ in ("InternalIP", "Hostname"):
            host = next((a.get("address", "") for a in addresses if a.get("type") == typ and a.get("address")), "")
            if host:
                break
        if not host:
            raise APIError(500, "InternalError", f'node "{node}" has no InternalIP or Hostname address in '
                                                 f'status.addresses; cannot reach its agent')
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or DEFAULT_AGENT_PORT
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise APIError(500, "InternalError", f'node "{node}" has an invalid kubelet port {port!r}') from None
        return Target(pod, node, host, port)

    @staticmethod
    def container(target: Target, requested: str) -> str:
        """The container a request means: the one asked for, else the only one (a 400 otherwise)."""
        spec = target.pod.get("spec") or {}
        name = target.pod["metadata"]["name"]
        containers = [c.get("name", "") for c in spec.get("containers") or []]
        inits = [c.get("name", "") for c in spec.get("initContainers") or []]
        ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
        if requested:
            if requested not in containers + inits + ephemeral:
                raise bad_request(f"container {requested} is not valid for pod {name}")
            return requested
        if len(containers) == 1:
            return containers[0]
        msg = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        if inits:
            msg += f" or one of the init containers: [{' '.join(inits)}]"
        if ephemeral:
            msg += f" or one of the ephemeral containers: [{' '.join(ephemeral)}]"
        raise bad_request(msg)

    # ------------------------------------------------------------------ TLS to the agent

    async def tls(self, host: str, port: int, node: str = "") -> ssl.SSLContext:
        """The CA-verifying context if the agent's certificate passes it (once it has, for good),
        else the non-verifying one (until the next check). A certificate from the agents' serving
        CA must also name `node` (`CN=system:node:<node>`): one node's certificate, even for an
        address it claimed, does not pass for another's agent."""
        key = (host, port, node)
        known = self._verified.get(key)
        if known is not None and (known[0] is self._strict or time.monotonic() - known[1] < INSECURE_RECHECK):
            return known[0]
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, w = await asyncio.open_connection(host, port, ssl=self._strict)
            peer = w.get_extra_info("peercert") or {}
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
            issuer = dict(x[0] for x in peer.get("issuer", ()))
            subject = dict(x[0] for x in peer.get("subject", ()))
            if node and issuer.get("commonName") == KUBELET_SERVING_CA_NAME and \
                    subject.get("commonName") != f"system:node:{node}":
                raise APIError(502, "InternalError", f"the agent at {host}:{port} presents a certificate for "
                                                     f"{subject.get('commonName')!r}, not for node {node!r}")
            ctx = self._strict
        except ssl.SSLCertVerificationError as e:
            if known is None:
                log.warning("agent at %s:%d: certificate not verifiable with the cluster CA (%s); the API server "
                            "connects to it without verifying TLS", host, port, e.verify_message)
            ctx = self._insecure
        except (OSError, TimeoutError):
            return self._insecure  # unreachable now: the caller reports it; decide next time
        self._verified[key] = (ctx, time.monotonic())
        return ctx

    # ------------------------------------------------------------------ logs

    async def logs(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        q = request.query
        for k in INT_LOG_PARAMS:
            if q.get(k, "") != "":
                try:
                    val = int(q[k])
                except ValueError:
                    raise bad_request(f"{k}: Invalid value: {q[k]!r}: must be an integer") from None
                if val < 0 or (val == 0 and k != "tailLines"):
                    raise bad_request(f"{k}: Invalid value: {val}: must be greater than {0 if k != 'tailLines' else -1}")
        t = await self.target(ns, name)
        container = self.container(t, q.get("container", ""))
        params = [(k, q[k]) for k in LOG_PARAMS if q.get(k, "") != ""]
        url = f"{t.base}/containerLogs/{quote(ns)}/{quote(name)}/{quote(container)}"
        if params:
            url += "?" + urlencode(params)
        ctx = await self.tls(t.host, t.port, t.node)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=None)
        session = aiohttp.ClientSession(timeout=timeout)
        try:
            try:
                upstream = await session.get(url, ssl=ctx)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                raise backend_error(t.node, t.base, e) from None
            async with upstream:
                if upstream.status != 200:
                    body = await upstream.read()
                    raise agent_error(upstream.status, upstream.headers.get("Content-Type", ""), body, t.node)
                resp = web.StreamResponse(status=200)
                resp.headers["Content-Type"] = "text/plain"
                resp.enable_chunked_encoding()
                await resp.prepare(request)
                with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                    async for chunk in upstream.content.iter_any():
                        await resp.write(chunk)
                with contextlib.suppress(ConnectionError):
                    await resp.write_eof()
                return resp
        finally:
            await session.close()

    # ------------------------------------------------------------------ exec / attach / portforward

    async def stream(self, request: web.Request, ns: str, name: str, sub: str) -> web.StreamResponse:
        q = request.query
        t = await self.target(ns, name)
        if sub == "portforward":
            path = f"/portForward/{quote(ns)}/{quote(name)}"
            params = [("port", p) for v in q.getall("ports", []) + q.getall("port", [])
                      for p in v.split(",") if p.strip()]
        else:
            container = self.container(t, q.get("container", ""))
            path = f"/{sub}/{quote(ns)}/{quote(name)}/{quote(container)}"
            params = [(k, val) for k, val in q.items() if k != "container"]
        if params:
            path += "?" + urlencode(params)
        return await self._splice(request, t, path)

    async def _splice(self, request: web.Request, t: Target, path: str) -> web.StreamResponse:
        if request.headers.get("Upgrade", "") == "":
            raise bad_request("Upgrade request required")
        ctx = await self.tls(t.host, t.port, t.node)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(t.host, t.port, ssl=ctx,
                                                               server_hostname=t.host)
        except (OSError, TimeoutError) as e:
            raise backend_error(t.node, t.base, e) from None
        try:
            head = [f"{request.method} {path} HTTP/1.1", f"Host: {t.host}:{t.port}", "Content-Length: 0"]
            for k, val in request.headers.items():
                if k.lower() in _UPGRADE_HEADERS:
                    head.append(f"{k}: {val}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            await writer.drain()
            async with asyncio.timeout(CONNECT_TIMEOUT * 3):
                response_head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            writer.close()
            raise backend_error(t.node, t.base, e) from None
        status_line, *lines = response_head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError):
            writer.close()
            raise backend_error(t.node, t.base, ValueError(f"bad response {status_line!r}")) from None
        headers = {}
        for line in lines:
            k, _, val = line.partition(":")
            if k:
                headers[k.strip().lower()] = val.strip()
        if status != 101:
            body = b""
            with contextlib.suppress(Exception):
                n = int(headers.get("content-length", "-1"))
                async with asyncio.timeout(5):
                    body = await (reader.readexactly(n) if n >= 0 else reader.read(65536))
            writer.close()
            err = agent_error(status, headers.get("content-type", ""), body, t.node)
            for k in ("x-accepted-stream-protocol-versions",):
                if k in headers:
                    err.headers["X-Accepted-Stream-Protocol-Versions"] = headers[k]
            raise err
        transport = request.transport
        if transport is None or transport.is_closing():
            writer.close()
            return web.Response(status=400, text="client went away")
        transport.write(response_head)
        splice = _Splice(transport, writer)  # type: ignore[arg-type]
        transport.set_protocol(splice)
        with contextlib.suppress(RuntimeError, AttributeError):
            if not transport.is_reading():  # type: ignore[attr-defined]
                transport.resume_reading()
        request.protocol.close()  # no keep-alive: the socket is spliced until one side hangs up
        await splice.pump(reader)
        return HijackedResponse()


def agent_error(status: int, ctype: str, body: bytes, node: str) -> APIError:
    """The agent's refusal as an APIError: its own Status when it sent one, else its text."""
    if "json" in ctype:
        try:
            obj = json.loads(body)
            if isinstance(obj, dict) and obj.get("kind") == "Status":
                return APIError(int(obj.get("code") or status), obj.get("reason", "") or "BadRequest",
                                obj.get("message", "") or f"the agent on node {node} answered {status}")
        except ValueError:
            pass
    text = body.decode(errors="replace").strip() or f"the agent on node {node} answered HTTP {status}"
    reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(status, "InternalError")
    if status in (401, 403):
        text = f"the agent on node {node} refused the API server's credentials ({status}: {text})"
        status = 502
    return APIError(status, reason, text)


class _Splice(asyncio.Protocol):
    """The client's socket after the upgrade, joined to the agent connection, with flow control
    both ways (a slow side pauses reading on the other)."""

    def __init__(self, client: asyncio.Transport, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self._client_writable = asyncio.Event()
        self._client_writable.set()
        self._paused = False

    # client -> agent
    def data_received(self, data: bytes) -> None:
        self.upstream.write(data)
        if not self._paused and self.upstream.transport.get_write_buffer_size() > HIGH_WATER:
            self._paused = True
            with contextlib.suppress(RuntimeError):
                self.client.pause_reading()
            asyncio.ensure_future(self._resume())

    async def _resume(self) -> None:
        with contextlib.suppress(Exception):
            await self.upstream.drain()
        self._paused = False
        with contextlib.suppress(RuntimeError):
            self.client.resume_reading()

    def eof_received(self) -> bool:
        with contextlib.suppress(Exception):
            if self.upstream.can_write_eof():
                self.upstream.write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._client_writable.set()
        self.upstream.close()

    def pause_writing(self) -> None:
        self._client_writable.clear()

    def resume_writing(self) -> None:
        self._client_writable.set()

    # agent -> client
    async def pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                if self.client.is_closing():
                    break
                self.client.write(data)
                await self._client_writable.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.client.close()
            self.upstream.close()
