"""Kubernetes remotecommand (exec/attach) over SPDY streams and over websocket channels.

SPDY (kubectl <= 1.29, and the fallback of later ones): the client opens one SPDY stream per
role, named by its `streamType` header; we must have seen all the roles the query asked for
before the process starts. The error stream carries the outcome: plain text in v2/v3, a JSON
metav1.Status in v4 (which is how a non-zero exit code reaches `kubectl`'s own exit code).

Websocket (kubectl >= 1.30): one connection, every binary message prefixed by a channel byte
(0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); v5 adds 255 = "close channel <n>", which is
the only way a websocket client can signal stdin EOF.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import WSMsgType, web

from cri.streaming.backend import ExecBackend, ExecError, ExecIO, ExecOptions, TerminalSize
from cri.streaming.session import SpdySession, SpdyStream

log = logging.getLogger(__name__)

V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
V5 = "v5.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"

# What the kubelet offers over SPDY: v5 exists only for websockets.
SPDY_PROTOCOLS = [V4, V3, V2]
WEBSOCKET_PROTOCOLS = [V5, V4, V1, V4_BASE64, V1_BASE64]

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
STREAM_TYPES = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}
STREAM_CREATION_TIMEOUT = 30.0
WS_CHUNK = 32 * 1024


class BadRequest(Exception):
    """A client error before any upgrade: answered as a 400 Status."""


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() in ("1", "true")


def parse_options(query: Any, attach: bool = False) -> ExecOptions:
    """Accepts both the API server's query (`stdin=true`, `command=` repeated) and the
    kubelet/CRI one (`stdin=1`, `cmd=` repeated)."""
    command = list(query.getall("command", [])) or list(query.getall("cmd", []))
    opts = ExecOptions(
        command=command,
        container=query.get("container", ""),
        stdin=_flag(query, "stdin") or _flag(query, "input"),
        stdout=_flag(query, "stdout") or _flag(query, "output"),
        stderr=_flag(query, "stderr") or _flag(query, "error"),
        tty=_flag(query, "tty"),
    )
    if opts.tty and opts.stderr:
        opts = ExecOptions(opts.command, opts.container, opts.stdin, opts.stdout, False, True)
    if not (opts.stdin or opts.stdout or opts.stderr):
        raise BadRequest("you must specify at least 1 of stdin, stdout, stderr")
    if not attach and not opts.command:
        raise BadRequest("you must specify a command")
    return opts


def status_success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def status_exit_code(code: int) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def status_error(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}


def normalise_exit_code(code: int) -> int:
    """client-go parses the code as a uint8; a signal death (negative) becomes 128+signal."""
    if code < 0:
        code = 128 - code
    return min(code, 255)


async def run_backend(
    backend: ExecBackend, options: ExecOptions, io: ExecIO, attach: bool, client_gone: asyncio.Event
) -> dict[str, Any] | None:
    """The outcome as the Status the client expects on its error channel; None if the client
    went away first, in which case the backend is cancelled (it must kill the process, or an
    abandoned `kubectl exec ... tail -f` would run forever)."""
    task = asyncio.ensure_future(_outcome(backend, options, io, attach))
    gone = asyncio.ensure_future(client_gone.wait())
    try:
        await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _outcome(backend: ExecBackend, options: ExecOptions, io: ExecIO, attach: bool) -> dict[str, Any]:
    try:
        if attach:
            code = await backend.attach(options, io)
        else:
            code = await backend.exec(options, io)
    except ExecError as e:
        return status_error(str(e))
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        return status_error(f"stream closed: {e}")
    except Exception as e:  # a backend bug must still answer the client, not hang it
        log.exception("exec backend failed")
        return status_error(f"internal error: {e}")
    if attach:
        # The kubelet's (and CRI streaming server's) ServeAttach reports Success once the stream
        # ends: attach watches a process, it does not own its exit code. kubectl relies on it --
        # `kubectl debug -i`/`run -i` fall back to re-printing the logs after a failed attach.
        return status_success()
    code = normalise_exit_code(code)
    return status_success() if code == 0 else status_exit_code(code)


def _status_text(status: dict[str, Any]) -> str:
    """v2/v3 error streams carry only text; empty means success."""
    return "" if status["status"] == "Success" else status.get("message", "error")


class _ResizeQueue:
    """Terminal sizes as an async iterator; ends when the client goes away."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[TerminalSize | None] = asyncio.Queue()

    def put(self, size: TerminalSize | None) -> None:
        self._q.put_nowait(size)

    def feed_json(self, buf: str) -> str:
        """Decode every complete JSON object in buf, return the unparsed rest."""
        decoder = json.JSONDecoder()
        buf = buf.lstrip()
        while buf:
            try:
                obj, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                if "}" not in buf and len(buf) < 4096:
                    break  # an object still arriving
                # Garbage: resynchronise on the next object rather than stall the stream.
                nxt = buf.find("{", 1)
                buf = buf[nxt:] if nxt > 0 else ""
                continue
            buf = buf[end:].lstrip()
            try:
                size = TerminalSize(int(obj["Width"]), int(obj["Height"]))
            except (TypeError, KeyError, ValueError):
                continue
            self.put(size)
        return buf

    def __aiter__(self) -> AsyncIterator[TerminalSize]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[TerminalSize]:
        while (size := await self._q.get()) is not None:
            yield size


# --------------------------------------------------------------------------------------------
# SPDY
# --------------------------------------------------------------------------------------------
def expected_streams(options: ExecOptions, protocol: str) -> set[str]:
    want = {"error"}
    if options.stdin:
        want.add("stdin")
    if options.stdout:
        want.add("stdout")
    if options.stderr and not options.tty:
        want.add("stderr")
    if options.tty and protocol in (V3, V4):
        want.add("resize")
    return want


async def _gather_streams(session: SpdySession, want: set[str]) -> dict[str, SpdyStream]:
    streams: dict[str, SpdyStream] = {}
    while set(streams) != want:
        stream = await session.accept()
        if stream is None:
            raise ConnectionResetError("client went away before opening its streams")
        kind = stream.header("streamtype", "")
        if kind not in want or kind in streams:
            await stream.reset()
            continue
        await stream.reply()
        streams[kind] = stream
    return streams


async def _pump_resize(stream: SpdyStream, sizes: _ResizeQueue) -> None:
    buf = ""
    try:
        while chunk := await stream.read():
            buf = sizes.feed_json(buf + chunk.decode("utf-8", "replace"))
    finally:
        sizes.put(None)


async def serve_spdy(
    session: SpdySession, protocol: str, options: ExecOptions, backend: ExecBackend, attach: bool = False
) -> None:
    """Run one exec/attach on an upgraded SPDY session, then shut the session down."""
    try:
        streams = await asyncio.wait_for(
            _gather_streams(session, expected_streams(options, protocol)), STREAM_CREATION_TIMEOUT
        )
    except (TimeoutError, ConnectionError) as e:
        log.info("exec: streams not created: %s", e)
        await session.goaway()
        return
    sizes = _ResizeQueue()
    resize_task = None
    if "resize" in streams:
        resize_task = asyncio.ensure_future(_pump_resize(streams["resize"], sizes))
    else:
        sizes.put(None)
    io = ExecIO(
        stdin=streams.get("stdin"), stdout=streams.get("stdout"), stderr=streams.get("stderr"), resize=sizes
    )
    status = await run_backend(backend, options, io, attach, session.closed)
    if status is None:
        if resize_task:
            resize_task.cancel()
        return
    error = streams["error"]
    with contextlib.suppress(ConnectionError):
        if protocol == V4:
            await error.write(json.dumps(status).encode())
        elif text := _status_text(status):
            await error.write(text.encode())
    for name in ("stdout", "stderr", "error", "stdin", "resize"):
        if name in streams:
            await streams[name].close()
    if resize_task:
        resize_task.cancel()
    await session.goaway()


# --------------------------------------------------------------------------------------------
# Websocket channels
# --------------------------------------------------------------------------------------------
class QueueReader:
    """An AsyncReader fed from a message loop (websocket channel 0)."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[bytes] = asyncio.Queue()
        self._rest = b""
        self._eof = False

    def feed(self, data: bytes) -> None:
        if data and not self._eof:
            self._q.put_nowait(data)

    def feed_eof(self) -> None:
        if not self._eof:
            self._eof = True
            self._q.put_nowait(b"")

    async def read(self, n: int = -1) -> bytes:
        chunk = self._rest or await self._q.get()
        if not chunk:
            self._q.put_nowait(b"")  # stay at EOF for later reads
            return b""
        if 0 <= n < len(chunk):
            self._rest = chunk[n:]
            return chunk[:n]
        self._rest = b""
        return chunk


class ChannelWriter:
    """An AsyncWriter that frames data for one websocket channel."""

    def __init__(self, ws: web.WebSocketResponse, channel: int, base64_text: bool, v5: bool) -> None:
        self._ws = ws
        self._channel = channel
        self._b64 = base64_text
        self._v5 = v5
        self._closed = False

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), WS_CHUNK):
            await send_channel(self._ws, self._channel, data[i : i + WS_CHUNK], self._b64)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._v5 and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                await self._ws.send_bytes(bytes([CLOSE, self._channel]))


async def send_channel(ws: web.WebSocketResponse, channel: int, data: bytes, base64_text: bool) -> None:
    if base64_text:
        await ws.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
    else:
        await ws.send_bytes(bytes([channel]) + data)


def decode_channel_message(msg_type: WSMsgType, data: Any, base64_text: bool) -> tuple[int, bytes] | None:
    """(channel, payload) of one inbound message, or None for messages to ignore."""
    if base64_text:
        if msg_type != WSMsgType.TEXT or not data:
            return None
        channel = ord(data[0]) - ord("0")
        try:
            return channel, base64.b64decode(data[1:])
        except ValueError:
            return None
    if msg_type != WSMsgType.BINARY or not data:
        return None
    return data[0], bytes(data[1:])


async def serve_websocket(
    ws: web.WebSocketResponse, options: ExecOptions, backend: ExecBackend, attach: bool = False
) -> None:
    protocol = ws.ws_protocol or V1
    b64 = "base64" in protocol
    v5 = protocol == V5
    stdin = QueueReader() if options.stdin else None
    sizes = _ResizeQueue()
    if not options.tty:
        sizes.put(None)

    async def read_loop() -> None:
        resize_buf = ""
        try:
            async for msg in ws:
                decoded = decode_channel_message(msg.type, msg.data, b64)
                if decoded is None:
                    continue
                channel, payload = decoded
                if channel == STDIN and stdin is not None:
                    stdin.feed(payload)
                elif channel == RESIZE and options.tty:
                    resize_buf = sizes.feed_json(resize_buf + payload.decode("utf-8", "replace"))
                elif channel == CLOSE and v5 and payload[:1] == bytes([STDIN]) and stdin is not None:
                    stdin.feed_eof()
        finally:
            if stdin is not None:
                stdin.feed_eof()
            sizes.put(None)

    client_gone = asyncio.Event()
    reader = asyncio.ensure_future(read_loop())
    reader.add_done_callback(lambda _: client_gone.set())
    io = ExecIO(
        stdin=stdin,
        stdout=ChannelWriter(ws, STDOUT, b64, v5) if options.stdout else None,
        stderr=ChannelWriter(ws, STDERR, b64, v5) if options.stderr and not options.tty else None,
        resize=sizes,
    )
    status = await run_backend(backend, options, io, attach, client_gone)
    with contextlib.suppress(ConnectionError):
        if status is not None and not ws.closed:
            if protocol in (V5, V4, V4_BASE64):
                await send_channel(ws, ERROR, json.dumps(status).encode(), b64)
            elif text := _status_text(status):
                await send_channel(ws, ERROR, text.encode(), b64)
            await ws.close()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


__all__ = [
    "SPDY_PROTOCOLS",
    "WEBSOCKET_PROTOCOLS",
    "BadRequest",
    "parse_options",
    "serve_spdy",
    "serve_websocket",
]
