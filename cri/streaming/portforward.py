"""Kubernetes port-forward over SPDY (`portforward.k8s.io`) and over websocket channels.

SPDY: for every local connection the client opens an `error` stream and a `data` stream that
share a `requestID` (and carry the `port`). Bytes on the data stream are the TCP payload both
ways; the error stream is read to its end and any text in it is reported as a failure. The
same SPDY session also runs tunnelled inside websocket binary messages (kubectl >= 1.31 asks
for `SPDY/3.1+portforward.k8s.io` first).

Websocket channels (the kubelet's other dialect, `?port=80&port=443`): channel 2i is the data
of the i-th port and 2i+1 its errors; the first message on each is the port, little-endian.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from aiohttp import web

from cri.streaming.backend import PortForwardBackend
from cri.streaming.remotecommand import QueueReader, decode_channel_message, send_channel
from cri.streaming.session import SpdySession, SpdyStream

log = logging.getLogger(__name__)

PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
WEBSOCKET_CHANNEL_PROTOCOLS = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io"]
PAIR_TIMEOUT = 30.0
READ_SIZE = 64 * 1024


def _port(value: str | None) -> int | None:
    try:
        port = int(value or "")
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


async def forward_pair(backend: PortForwardBackend, port: int, data: SpdyStream, error: SpdyStream) -> None:
    """One local connection: pump bytes both ways until the pod side is done."""
    try:
        try:
            reader, writer = await backend.connect(port)
        except Exception as e:
            with contextlib.suppress(ConnectionError):
                await error.write(f"error forwarding port {port} to pod: {e}".encode())
            return

        async def client_to_pod() -> None:
            while chunk := await data.read():
                writer.write(chunk)
                await writer.drain()
            if data.reset_status is not None:
                writer.close()  # the client gave up on this connection: so does the pod side
            elif writer.can_write_eof():
                writer.write_eof()

        upstream = asyncio.ensure_future(client_to_pod())
        try:
            while chunk := await reader.read(READ_SIZE):
                await data.write(chunk)
        except ConnectionError:
            pass
        finally:
            # The pod side finished: the client stops once it sees FIN on data and error.
            if not upstream.done():
                # Let bytes already sent by the client reach the pod before dropping it.
                with contextlib.suppress(TimeoutError, ConnectionError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(upstream), 0.2)
            upstream.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    finally:
        await data.close()
        await error.close()


async def serve_spdy(session: SpdySession, backend: PortForwardBackend) -> None:
    """Serve stream pairs until the client closes the connection."""
    pending: dict[str, dict[str, SpdyStream]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def expire(request_id: str) -> None:
        await asyncio.sleep(PAIR_TIMEOUT)
        for stream in pending.pop(request_id, {}).values():
            await stream.reset()

    try:
        while (stream := await session.accept()) is not None:
            kind = stream.header("streamtype")
            port = _port(stream.header("port"))
            if kind not in ("data", "error") or port is None:
                await stream.reset()
                continue
            # Clients before requestID paired streams by id: error first, data right after.
            request_id = stream.header("requestid") or str(stream.id if kind == "error" else stream.id - 2)
            pair = pending.setdefault(request_id, {})
            if kind in pair:
                await stream.reset()
                continue
            await stream.reply()
            pair[kind] = stream
            if len(pair) == 1:
                timer = asyncio.ensure_future(expire(request_id))
                tasks.add(timer)
                timer.add_done_callback(tasks.discard)
                continue
            del pending[request_id]
            task = asyncio.ensure_future(forward_pair(backend, port, pair["data"], pair["error"]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def serve_websocket_channels(
    ws: web.WebSocketResponse, ports: list[int], backend: PortForwardBackend
) -> None:
    b64 = "base64" in (ws.ws_protocol or "")
    inputs = [QueueReader() for _ in ports]

    async def forward(i: int, port: int) -> None:
        data_ch, err_ch = 2 * i, 2 * i + 1
        prefix = struct.pack("<H", port)
        await send_channel(ws, data_ch, prefix, b64)
        await send_channel(ws, err_ch, prefix, b64)
        try:
            reader, writer = await backend.connect(port)
        except Exception as e:
            await send_channel(ws, err_ch, f"error forwarding port {port} to pod: {e}".encode(), b64)
            return

        async def client_to_pod() -> None:
            while chunk := await inputs[i].read():
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        upstream = asyncio.ensure_future(client_to_pod())
        try:
            while chunk := await reader.read(READ_SIZE):
                await send_channel(ws, data_ch, chunk, b64)
        finally:
            upstream.cancel()
            writer.close()

    workers = [asyncio.ensure_future(forward(i, p)) for i, p in enumerate(ports)]
    try:
        async for msg in ws:
            decoded = decode_channel_message(msg.type, msg.data, b64)
            if decoded is None:
                continue
            channel, payload = decoded
            if channel % 2 == 0 and channel // 2 < len(inputs):
                inputs[channel // 2].feed(payload)
    finally:
        for q in inputs:
            q.feed_eof()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
