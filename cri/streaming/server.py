"""aiohttp glue: turn an exec/attach/portforward request into a websocket or SPDY session.

Mount from any aiohttp app (the API server and the CRI streaming server both do):

    async def pod_exec(request):
        return await serve_exec(request, backend_for(request))

aiohttp knows websockets but not SPDY, so for `Upgrade: SPDY/3.1` we write the 101 ourselves
and move the socket to our own asyncio protocol (`transport.set_protocol`); aiohttp gets the
connection back only to close it. This works the same on plain TCP and TLS transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from cri.streaming import portforward, remotecommand
from cri.streaming.backend import ExecBackend, ExecOptions, PortForwardBackend
from cri.streaming.session import SpdySession

log = logging.getLogger(__name__)

HEADER_PROTOCOL = "X-Stream-Protocol-Version"
HEADER_ACCEPTED = "X-Accepted-Stream-Protocol-Versions"
# After our last frame, how long to wait for the client to hang up before we do: closing a
# socket with unread input makes the kernel send RST, which can destroy our final frames.
LINGER = 5.0


def status_response(
    code: int, reason: str, message: str, headers: dict[str, Any] | None = None
) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    resp = web.Response(status=code, text=json.dumps(body), content_type="application/json")
    for k, v in (headers or {}).items():
        if isinstance(v, list):
            for item in v:
                resp.headers.add(k, item)
        else:
            resp.headers[k] = v
    return resp


def _tokens(request: web.Request, header: str) -> list[str]:
    return [t.strip() for v in request.headers.getall(header, []) for t in v.split(",") if t.strip()]


def wants_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def wants_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/3")


def negotiate(client: list[str], server: list[str]) -> str | None:
    """The client's most preferred protocol that we speak (the kubelet's rule)."""
    return next((p for p in client if p in server), None)


class HijackedResponse(web.StreamResponse):
    """Handed back to aiohttp after a handler wrote its own 101 and took the socket over
    (SPDY, or a spliced proxy connection): sends nothing and closes when done."""

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> None:  # type: ignore[override]
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class RawConnection(asyncio.Protocol):
    """The socket after the upgrade: bytes in go to the session, the session's bytes go out."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.session = SpdySession(self.send, server=True, on_pressure=self._pressure)
        self._writable = asyncio.Event()
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self.session.feed_data(data)

    def eof_received(self) -> bool:
        self.session.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.feed_eof()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _pressure(self, paused: bool) -> None:
        with contextlib.suppress(RuntimeError):
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    async def send(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)
        await self._writable.wait()

    async def finish(self) -> None:
        """Let the client hang up first, then make sure the socket is gone."""
        await self.session.wait_closed(LINGER)
        self.transport.close()


def upgrade_spdy(request: web.Request, protocols: list[str]) -> tuple[RawConnection, str] | web.Response:
    """Answer 101 and take the socket over, or return the error response to send instead."""
    offered = _tokens(request, HEADER_PROTOCOL)
    if not offered:
        return status_response(400, "BadRequest", f"unable to upgrade: {HEADER_PROTOCOL} is required")
    chosen = negotiate(offered, protocols)
    if chosen is None:
        message = f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server accepts {protocols}"
        return status_response(403, "Forbidden", message, {HEADER_ACCEPTED: protocols})
    transport = request.transport
    if transport is None or transport.is_closing():
        return status_response(400, "BadRequest", "connection already closed")
    transport.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\n"
            f"{HEADER_PROTOCOL}: {chosen}\r\n\r\n"
        ).encode()
    )
    conn = RawConnection(transport)  # type: ignore[arg-type]
    transport.set_protocol(conn)
    with contextlib.suppress(RuntimeError, AttributeError):
        if not transport.is_reading():  # type: ignore[attr-defined]
            transport.resume_reading()
    request.protocol.close()  # no keep-alive: the socket is ours until we hand it back closed
    return conn, chosen


async def _websocket(request: web.Request, protocols: list[str]) -> web.WebSocketResponse | None:
    """Upgrade, or None if the client offered only subprotocols we do not speak (no offer at
    all means the original `channel.k8s.io`)."""
    offered = _tokens(request, "Sec-WebSocket-Protocol")
    if offered and negotiate(offered, protocols) is None:
        return None
    ws = web.WebSocketResponse(protocols=protocols, autoping=True, max_msg_size=0)
    await ws.prepare(request)
    return ws


async def serve_exec(
    request: web.Request,
    backend: ExecBackend,
    *,
    attach: bool = False,
    options: ExecOptions | None = None,
) -> web.StreamResponse:
    """exec (or attach) over whichever upgrade the client asked for.

    `options` defaults to the request's query (API server URLs). The CRI streaming server
    passes the ones it stored with the token of the URL it handed out in ExecResponse.url."""
    if options is None:
        try:
            options = remotecommand.parse_options(request.query, attach=attach)
        except remotecommand.BadRequest as e:
            return status_response(400, "BadRequest", str(e))
    if wants_websocket(request):
        ws = await _websocket(request, remotecommand.WEBSOCKET_PROTOCOLS)
        if ws is None:
            # A non-101 answer makes kubectl fall back to SPDY.
            return status_response(400, "BadRequest", "unsupported websocket subprotocol")
        await remotecommand.serve_websocket(ws, options, backend, attach)
        return ws
    if wants_spdy(request):
        upgraded = upgrade_spdy(request, remotecommand.SPDY_PROTOCOLS)
        if isinstance(upgraded, web.Response):
            return upgraded
        conn, protocol = upgraded
        try:
            await remotecommand.serve_spdy(conn.session, protocol, options, backend, attach)
        finally:
            await conn.finish()
        return HijackedResponse()
    return status_response(400, "BadRequest", "Upgrade request required")


async def serve_portforward(request: web.Request, backend: PortForwardBackend) -> web.StreamResponse:
    if wants_websocket(request):
        protocols = [portforward.TUNNEL_PROTOCOL, *portforward.WEBSOCKET_CHANNEL_PROTOCOLS]
        ws = await _websocket(request, protocols)
        if ws is None:
            return status_response(400, "BadRequest", "unsupported websocket subprotocol")
        if ws.ws_protocol == portforward.TUNNEL_PROTOCOL:
            await _serve_tunnel(ws, backend)
        else:
            ports = [p for v in request.query.getall("port", []) for p in v.split(",")]
            valid = [portforward._port(p) for p in ports]
            if not valid or None in valid:
                await ws.close(message=b"invalid port")
            else:
                await portforward.serve_websocket_channels(ws, [p for p in valid if p], backend)
        return ws
    if wants_spdy(request):
        upgraded = upgrade_spdy(request, [portforward.PROTOCOL])
        if isinstance(upgraded, web.Response):
            return upgraded
        conn, _ = upgraded
        try:
            await portforward.serve_spdy(conn.session, backend)
        finally:
            await conn.finish()
        return HijackedResponse()
    return status_response(400, "BadRequest", "Upgrade request required")


async def _serve_tunnel(ws: web.WebSocketResponse, backend: PortForwardBackend) -> None:
    """SPDY carried in websocket binary messages: each message is just the next bytes."""
    session = SpdySession(ws.send_bytes, server=True)

    async def pump() -> None:
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    session.feed_data(msg.data)
        finally:
            session.feed_eof()

    reader = asyncio.ensure_future(pump())
    try:
        await portforward.serve_spdy(session, backend)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if not ws.closed:
            await ws.close()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def exec_handler(
    get_backend: Callable[[web.Request], Awaitable[ExecBackend]], *, attach: bool = False
) -> Handler:
    """A ready-made route handler; `get_backend(request)` maps the URL to a backend (raise an
    aiohttp HTTP exception there for an unknown pod or container)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_exec(request, await get_backend(request), attach=attach)

    return handler


def portforward_handler(get_backend: Callable[[web.Request], Awaitable[PortForwardBackend]]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_portforward(request, await get_backend(request))

    return handler
