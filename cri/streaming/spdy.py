"""SPDY/3.1 framing: the wire format client-go (via moby/spdystream) still speaks for exec,
attach and port-forward.

Only the codec lives here: frames in and out, and the zlib-compressed name/value header block.
No I/O, so it can be fed arbitrary splits of a byte stream and tested without sockets; the
multiplexer in `session.py` drives it. Everything is from the SPDY/3 draft (plus 3.1's
session-level WINDOW_UPDATE on stream 0).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
SETTINGS_CLEAR = 0x01
INITIAL_WINDOW = 64 * 1024
MAX_FRAME_PAYLOAD = (1 << 24) - 1
# A header block bigger than this is not a Kubernetes header block; refusing it bounds the
# memory a hostile peer can make us inflate.
MAX_HEADER_BLOCK = 1 << 20


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class Setting(IntEnum):
    MAX_CONCURRENT_STREAMS = 4
    INITIAL_WINDOW_SIZE = 7


def _dictionary() -> bytes:
    """The SPDY/3 zlib dictionary: 4-byte-length-prefixed header words, then a run of common
    values without prefixes. Both ends must prime zlib with exactly these 1423 bytes."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date "
        "etag expect expires from host if-match if-modified-since if-none-match if-range "
        "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
        "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
        "user-agent vary via warning www-authenticate method get status"
    ).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """The peer broke the framing; the session answers with GOAWAY(PROTOCOL_ERROR) and closes."""

    def __init__(self, message: str, status: GoAwayStatus = GoAwayStatus.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.status = status


class StreamError(Exception):
    """A frame was wrong for one stream only: answer RST_STREAM and keep the session."""

    def __init__(self, stream_id: int, status: RstStatus, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.status = status


# Headers keep their wire order; a name may carry several values (NUL-separated on the wire).
Headers = list[tuple[str, str]]


def header_get(headers: Headers, name: str, default: str | None = None) -> str | None:
    name = name.lower()
    for k, v in headers:
        if k == name:
            return v
    return default


@dataclass
class DataFrame:
    stream_id: int
    data: bytes
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class SynReply:
    stream_id: int
    headers: Headers
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    values: dict[int, int] = field(default_factory=dict)
    flags: int = 0


@dataclass
class Ping:
    ping_id: int


@dataclass
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


Frame = DataFrame | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate


class HeaderCompressor:
    """One deflate stream per direction for the whole session, flushed at each header block:
    the peer's inflater depends on every block we sent before, so blocks must be compressed in
    exactly the order they go on the wire."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def compress(self, headers: Headers) -> bytes:
        merged: dict[str, list[str]] = {}
        for k, v in headers:
            merged.setdefault(k.lower(), []).append(v)
        out = [struct.pack(">I", len(merged))]
        for k, values in merged.items():
            kb, vb = k.encode(), "\0".join(values).encode()
            out += [struct.pack(">I", len(kb)), kb, struct.pack(">I", len(vb)), vb]
        return self._z.compress(b"".join(out)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, DICTIONARY)

    def decompress(self, block: bytes) -> Headers:
        try:
            raw = self._z.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise ProtocolError(f"header block does not inflate: {e}") from e
        if self._z.unconsumed_tail:
            raise ProtocolError("header block too large")
        return parse_header_block(raw)


def parse_header_block(raw: bytes) -> Headers:
    try:
        (count,) = struct.unpack_from(">I", raw, 0)
        pos = 4
        headers: Headers = []
        seen: set[str] = set()
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4 : pos + 4 + n]
            pos += 4 + n
            (m,) = struct.unpack_from(">I", raw, pos)
            value = raw[pos + 4 : pos + 4 + m]
            pos += 4 + m
            if len(name) != n or len(value) != m:
                raise ProtocolError("truncated header block")
            key = name.decode("latin-1").lower()
            if not key or key in seen:
                raise ProtocolError(f"empty or duplicate header name {key!r}")
            seen.add(key)
            for v in value.split(b"\0"):
                headers.append((key, v.decode("latin-1")))
    except struct.error as e:
        raise ProtocolError("truncated header block") from e
    if pos != len(raw):
        raise ProtocolError("trailing bytes after the header block")
    return headers


def _control(ftype: FrameType, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise ValueError("control frame too large")
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


class FrameEncoder:
    """Serialises frames; owns the outgoing header compression context."""

    def __init__(self) -> None:
        self._headers = HeaderCompressor()

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id=sid, data=data, flags=flags):
                if len(data) > MAX_FRAME_PAYLOAD:
                    raise ValueError("data frame too large")
                return struct.pack(">II", sid & 0x7FFFFFFF, (flags << 24) | len(data)) + data
            case SynStream():
                block = self._headers.compress(frame.headers)
                body = struct.pack(
                    ">IIBB", frame.stream_id, frame.associated_id, (frame.priority & 7) << 5, 0
                )
                return _control(FrameType.SYN_STREAM, frame.flags, body + block)
            case SynReply():
                block = self._headers.compress(frame.headers)
                return _control(FrameType.SYN_REPLY, frame.flags, struct.pack(">I", frame.stream_id) + block)
            case HeadersFrame():
                block = self._headers.compress(frame.headers)
                return _control(FrameType.HEADERS, frame.flags, struct.pack(">I", frame.stream_id) + block)
            case RstStream():
                return _control(FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
            case Settings():
                body = struct.pack(">I", len(frame.values))
                body += b"".join(struct.pack(">II", k & 0xFFFFFF, v) for k, v in frame.values.items())
                return _control(FrameType.SETTINGS, frame.flags, body)
            case Ping():
                return _control(FrameType.PING, 0, struct.pack(">I", frame.ping_id))
            case GoAway():
                return _control(
                    FrameType.GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status)
                )
            case WindowUpdate():
                return _control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameParser:
    """Incremental decoder: feed() whatever bytes arrived, get back the whole frames among them.

    Stateful across calls (partial frames are buffered, the header inflater lives for the
    session). After a ProtocolError the parser is poisoned: the session must GOAWAY."""

    def __init__(self, max_payload: int = MAX_FRAME_PAYLOAD) -> None:
        self._buf = bytearray()
        self._headers = HeaderDecompressor()
        self._max_payload = max_payload
        self._broken = False

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken:
            raise ProtocolError("parser already failed")
        self._buf += data
        frames: list[Frame] = []
        try:
            while len(self._buf) >= 8:
                word, flags_len = struct.unpack_from(">II", self._buf, 0)
                length = flags_len & 0xFFFFFF
                if length > self._max_payload:
                    raise ProtocolError(f"frame of {length} bytes is larger than {self._max_payload}")
                if len(self._buf) < 8 + length:
                    break
                payload = bytes(self._buf[8 : 8 + length])
                del self._buf[: 8 + length]
                flags = flags_len >> 24
                if word & 0x80000000:
                    frame = self._control(word, flags, payload)
                    if frame is not None:
                        frames.append(frame)
                else:
                    if word == 0:
                        raise ProtocolError("data frame on stream 0")
                    frames.append(DataFrame(word, payload, flags))
        except ProtocolError:
            self._broken = True
            raise
        return frames

    def _control(self, word: int, flags: int, p: bytes) -> Frame | None:
        version, ftype = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")

        def need(n: int, exact: bool = True) -> None:
            if len(p) < n or (exact and len(p) != n):
                raise ProtocolError(f"control frame type {ftype} has a bad length {len(p)}")

        def sid(v: int) -> int:
            v &= 0x7FFFFFFF
            if v == 0:
                raise ProtocolError(f"control frame type {ftype} on stream 0")
            return v

        if ftype == FrameType.SYN_STREAM:
            need(10, exact=False)
            stream_id, assoc, pri, _slot = struct.unpack_from(">IIBB", p)
            return SynStream(
                sid(stream_id), self._headers.decompress(p[10:]), assoc & 0x7FFFFFFF, pri >> 5, flags
            )
        if ftype == FrameType.SYN_REPLY:
            need(4, exact=False)
            stream_id = sid(struct.unpack_from(">I", p)[0])
            return SynReply(stream_id, self._headers.decompress(p[4:]), flags)
        if ftype == FrameType.HEADERS:
            need(4, exact=False)
            stream_id = sid(struct.unpack_from(">I", p)[0])
            return HeadersFrame(stream_id, self._headers.decompress(p[4:]), flags)
        if ftype == FrameType.RST_STREAM:
            need(8)
            stream_id, status = struct.unpack(">II", p)
            return RstStream(sid(stream_id), status)
        if ftype == FrameType.SETTINGS:
            need(4, exact=False)
            (count,) = struct.unpack_from(">I", p)
            need(4 + 8 * count)
            values = {}
            for i in range(count):
                idflags, value = struct.unpack_from(">II", p, 4 + 8 * i)
                values[idflags & 0xFFFFFF] = value
            return Settings(values, flags)
        if ftype == FrameType.PING:
            need(4)
            return Ping(struct.unpack(">I", p)[0])
        if ftype == FrameType.GOAWAY:
            need(8)
            last, status = struct.unpack(">II", p)
            return GoAway(last & 0x7FFFFFFF, status)
        if ftype == FrameType.WINDOW_UPDATE:
            need(8)
            stream_id, delta = struct.unpack(">II", p)
            delta &= 0x7FFFFFFF
            if delta == 0:
                raise ProtocolError("WINDOW_UPDATE with a zero delta")
            return WindowUpdate(stream_id & 0x7FFFFFFF, delta)
        # Unknown control frames (NOOP, CREDENTIAL, future types) must be ignored, not fatal.
        return None
