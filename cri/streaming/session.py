"""A SPDY/3.1 stream multiplexer on asyncio, independent of where the bytes come from.

The session is push-fed (`feed_data`/`feed_eof`) and writes through one async `send` callable,
so the same code runs over a hijacked HTTP/1.1 socket, over SPDY tunnelled in websocket binary
messages (kubectl >= 1.31 port-forward) and over a plain client connection in tests.

Flow control: we always grant the peer window as the application consumes data (stream and
session WINDOW_UPDATEs, as SPDY/3.1 requires). We only hold back our own sends once the peer
has shown it does flow control by sending a WINDOW_UPDATE: moby/spdystream, and therefore
kubectl, never sends one, and blocking at 64 KiB would hang every large `kubectl exec` output.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from cri.streaming import spdy
from cri.streaming.spdy import GoAwayStatus, Headers, RstStatus

log = logging.getLogger(__name__)

SendFn = Callable[[bytes], Awaitable[None]]
CHUNK = 16 * 1024
# Inbound bytes buffered across streams before we ask the transport to stop reading: the
# backstop for peers that ignore our windows.
HIGH_WATER = 1 << 20
LOW_WATER = 256 * 1024


class SpdyStream:
    """One bidirectional stream: read() what the peer sends, write()/close() our half."""

    def __init__(self, session: SpdySession, stream_id: int, headers: Headers, initial_window: int) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self.reply_headers: Headers = []
        self._inbox: collections.deque[bytes] = collections.deque()
        self._readable = asyncio.Event()
        self.remote_closed = False
        self.local_closed = False
        self.reset_status: int | None = None
        self.send_window = initial_window
        self._unacked = 0
        self.replied: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def header(self, name: str, default: str | None = None) -> str | None:
        return spdy.header_get(self.headers, name, default)

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {dict(self.headers)}>"

    # -- inbound -------------------------------------------------------------------------
    def _deliver(self, data: bytes, fin: bool) -> None:
        if data:
            self._inbox.append(data)
        if fin:
            self.remote_closed = True
        self._readable.set()

    def _abort(self, status: int | None) -> None:
        self.reset_status = status
        self.remote_closed = self.local_closed = True
        self._readable.set()
        if not self.replied.done():
            self.replied.set_exception(ConnectionResetError(f"stream {self.id} reset ({status})"))
            self.replied.exception()  # retrieved: nobody may be waiting for this reply

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes; b"" once the peer half-closed (or reset) the stream."""
        while not self._inbox:
            if self.remote_closed:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._inbox.popleft()
        if 0 <= n < len(chunk):
            self._inbox.appendleft(chunk[n:])
            chunk = chunk[:n]
        self.session._consumed(self, len(chunk))
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    # -- outbound ------------------------------------------------------------------------
    async def reply(self, headers: Headers | None = None, fin: bool = False) -> None:
        await self.session._send(spdy.SynReply(self.id, headers or [], spdy.FLAG_FIN if fin else 0))
        if fin:
            self._local_fin()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.local_closed:
                raise ConnectionResetError(f"stream {self.id} is closed for writing")
            n = await self.session._reserve(self, min(len(view), CHUNK))
            await self.session._send(spdy.DataFrame(self.id, bytes(view[:n])))
            view = view[n:]

    async def close(self) -> None:
        """Half-close: FIN on an empty data frame. Idempotent, never raises."""
        if self.local_closed:
            return
        self._local_fin()
        with contextlib.suppress(ConnectionError):
            await self.session._send(spdy.DataFrame(self.id, b"", spdy.FLAG_FIN))

    async def reset(self, status: RstStatus = RstStatus.CANCEL) -> None:
        if self.reset_status is not None:
            return
        self._abort(status)
        self.session._forget(self)
        with contextlib.suppress(ConnectionError):
            await self.session._send(spdy.RstStream(self.id, status))

    def _local_fin(self) -> None:
        self.local_closed = True
        if self.remote_closed:
            self.session._forget(self)


class SpdySession:
    """Both ends of the protocol; `server=True` picks even stream ids for our own streams."""

    def __init__(
        self,
        send: SendFn,
        *,
        server: bool,
        on_pressure: Callable[[bool], None] | None = None,
    ) -> None:
        self._send_raw = send
        self.server = server
        self._on_pressure = on_pressure
        self._parser = spdy.FrameParser()
        self._encoder = spdy.FrameEncoder()
        self._lock = asyncio.Lock()
        self.streams: dict[int, SpdyStream] = {}
        self.incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._next_id = 2 if server else 1
        self._last_peer_id = 0
        self._peer_initial_window = spdy.INITIAL_WINDOW
        self._session_send_window = spdy.INITIAL_WINDOW
        self._session_unacked = 0
        self._flow_enforced = False
        self._window_open = asyncio.Event()
        self._buffered = 0
        self._paused = False
        self.goaway_received = False
        self.goaway_sent = False
        self.closed = asyncio.Event()
        self.error: Exception | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- feeding ---------------------------------------------------------------------------
    def feed_data(self, data: bytes) -> None:
        if self.closed.is_set():
            return
        try:
            frames = self._parser.feed(data)
        except spdy.ProtocolError as e:
            log.warning("spdy: protocol error from peer: %s", e)
            self.error = e
            self._spawn(self._fail(e.status))
            return
        for frame in frames:
            self._handle(frame)

    def feed_eof(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for stream in list(self.streams.values()):
            stream._abort(None)  # readers see EOF, writers ConnectionResetError
        self.streams.clear()
        self.incoming.put_nowait(None)
        self._window_open.set()

    # -- application API -------------------------------------------------------------------
    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened, or None once the connection is gone."""
        if self.closed.is_set() and self.incoming.empty():
            return None
        stream = await self.incoming.get()
        if stream is None:
            self.incoming.put_nowait(None)  # keep waking other acceptors
        return stream

    async def open_stream(self, headers: Headers, fin: bool = False, timeout: float = 30) -> SpdyStream:
        if self.closed.is_set() or self.goaway_received:
            raise ConnectionResetError("session is closed")
        async with self._lock:  # ids must reach the wire in increasing order
            sid = self._next_id
            self._next_id += 2
            stream = SpdyStream(self, sid, headers, self._peer_initial_window)
            self.streams[sid] = stream
            if fin:
                stream.local_closed = True
            await self._send_locked(spdy.SynStream(sid, headers, flags=spdy.FLAG_FIN if fin else 0))
        await asyncio.wait_for(asyncio.shield(stream.replied), timeout)
        return stream

    async def ping(self, ping_id: int) -> None:
        await self._send(spdy.Ping(ping_id))

    async def goaway(self, status: GoAwayStatus = GoAwayStatus.OK) -> None:
        if self.goaway_sent:
            return
        self.goaway_sent = True
        with contextlib.suppress(ConnectionError):
            await self._send(spdy.GoAway(self._last_peer_id, status))

    async def wait_closed(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # -- internals -------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fail(self, status: GoAwayStatus) -> None:
        await self.goaway(status)
        self.feed_eof()

    async def _send(self, frame: spdy.Frame) -> None:
        async with self._lock:
            await self._send_locked(frame)

    async def _send_locked(self, frame: spdy.Frame) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("session is closed")
        # Encode under the lock: header blocks share one deflate context and must hit the
        # wire in the order they were compressed.
        await self._send_raw(self._encoder.encode(frame))

    async def _send_quietly(self, frame: spdy.Frame) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(frame)

    async def _reserve(self, stream: SpdyStream, want: int) -> int:
        while self._flow_enforced and (stream.send_window <= 0 or self._session_send_window <= 0):
            if self.closed.is_set() or stream.reset_status is not None:
                raise ConnectionResetError(f"stream {stream.id} is gone")
            self._window_open.clear()
            await self._window_open.wait()
        n = want
        if self._flow_enforced:
            n = min(want, stream.send_window, self._session_send_window)
        stream.send_window -= n
        self._session_send_window -= n
        return n

    def _consumed(self, stream: SpdyStream, n: int) -> None:
        self._buffered -= n
        if self._paused and self._buffered < LOW_WATER and self._on_pressure:
            self._paused = False
            self._on_pressure(False)
        stream._unacked += n
        self._session_unacked += n
        updates = []
        if stream._unacked >= spdy.INITIAL_WINDOW // 2 and not stream.remote_closed:
            updates.append(spdy.WindowUpdate(stream.id, stream._unacked))
            stream._unacked = 0
        if self._session_unacked >= spdy.INITIAL_WINDOW // 2:
            updates.append(spdy.WindowUpdate(0, self._session_unacked))
            self._session_unacked = 0
        for u in updates:
            self._spawn(self._send_quietly(u))

    def _forget(self, stream: SpdyStream) -> None:
        self.streams.pop(stream.id, None)

    def _handle(self, frame: spdy.Frame) -> None:
        if not isinstance(frame, spdy.DataFrame):
            log.debug("spdy <- %s", frame)
        match frame:
            case spdy.DataFrame():
                self._on_data(frame)
            case spdy.SynStream():
                self._on_syn_stream(frame)
            case spdy.SynReply():
                stream = self.streams.get(frame.stream_id)
                if stream is None or stream.replied.done():
                    return
                stream.reply_headers = frame.headers
                stream.replied.set_result(None)
                if frame.fin:
                    stream._deliver(b"", True)
            case spdy.HeadersFrame():
                stream = self.streams.get(frame.stream_id)
                if stream is not None:
                    stream.reply_headers += frame.headers
                    if frame.flags & spdy.FLAG_FIN:
                        stream._deliver(b"", True)
            case spdy.RstStream():
                stream = self.streams.pop(frame.stream_id, None)
                if stream is not None:
                    stream._abort(frame.status)
            case spdy.Settings():
                new = frame.values.get(spdy.Setting.INITIAL_WINDOW_SIZE)
                if new is not None:
                    delta = new - self._peer_initial_window
                    self._peer_initial_window = new
                    for stream in self.streams.values():
                        stream.send_window += delta
                    self._window_open.set()
            case spdy.Ping():
                # Our own pings carry our parity; anything else is the peer's and is echoed.
                if (frame.ping_id % 2 == 0) != self.server:
                    self._spawn(self._send_quietly(frame))
            case spdy.GoAway():
                self.goaway_received = True
            case spdy.WindowUpdate():
                self._flow_enforced = True
                if frame.stream_id == 0:
                    self._session_send_window += frame.delta
                elif (stream := self.streams.get(frame.stream_id)) is not None:
                    stream.send_window += frame.delta
                self._window_open.set()

    def _on_syn_stream(self, frame: spdy.SynStream) -> None:
        sid = frame.stream_id
        peer_parity = 1 if self.server else 0
        if sid % 2 != peer_parity or sid <= self._last_peer_id:
            self._spawn(self._send_quietly(spdy.RstStream(sid, RstStatus.PROTOCOL_ERROR)))
            return
        self._last_peer_id = sid
        if self.goaway_sent or self.goaway_received:
            self._spawn(self._send_quietly(spdy.RstStream(sid, RstStatus.REFUSED_STREAM)))
            return
        stream = SpdyStream(self, sid, frame.headers, self._peer_initial_window)
        stream.replied.set_result(None)
        if frame.flags & spdy.FLAG_UNIDIRECTIONAL:
            stream.local_closed = True
        if frame.fin:
            stream.remote_closed = True
        self.streams[sid] = stream
        self.incoming.put_nowait(stream)

    def _on_data(self, frame: spdy.DataFrame) -> None:
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            self._spawn(self._send_quietly(spdy.RstStream(frame.stream_id, RstStatus.INVALID_STREAM)))
            return
        if stream.remote_closed:
            self._spawn(self._send_quietly(spdy.RstStream(frame.stream_id, RstStatus.STREAM_ALREADY_CLOSED)))
            return
        self._buffered += len(frame.data)
        if not self._paused and self._buffered > HIGH_WATER and self._on_pressure:
            self._paused = True
            self._on_pressure(True)
        stream._deliver(frame.data, frame.fin)
        if frame.fin and stream.local_closed:
            self._forget(stream)
