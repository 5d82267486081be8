"""SPDY/3.1 codec and multiplexer, without sockets."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from cri.streaming import spdy
from cri.streaming.session import SpdySession


def test_dictionary_is_the_spdy3_one() -> None:
    # Length and Adler-32 of the 1423-byte SPDY/3 dictionary; the Adler-32 is also the DICTID
    # that client-go's zlib stream announces, so any other value fails against kubectl.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


def test_header_blocks_share_one_compression_context() -> None:
    comp, decomp = spdy.HeaderCompressor(), spdy.HeaderDecompressor()
    blocks = [
        [("streamType", "error"), ("port", "8080"), ("requestID", "0")],
        [("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        [("x-multi", "a"), ("x-multi", "b"), ("empty", "")],
    ]
    encoded = [comp.compress(b) for b in blocks]
    # Later blocks back-reference earlier ones, so they only decode in order.
    assert len(encoded[1]) < len(encoded[0])
    assert [decomp.decompress(e) for e in encoded] == [
        [("streamtype", "error"), ("port", "8080"), ("requestid", "0")],
        [("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        [("x-multi", "a"), ("x-multi", "b"), ("empty", "")],
    ]


def test_header_block_interoperates_with_plain_zlib() -> None:
    """What a Go peer does: zlib at BestCompression with the dictionary, sync-flushed."""
    raw = struct.pack(">I", 1) + struct.pack(">I", 10) + b"streamtype" + struct.pack(">I", 5) + b"stdin"
    go = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
    block = go.compress(raw) + go.flush(zlib.Z_SYNC_FLUSH)
    assert spdy.HeaderDecompressor().decompress(block) == [("streamtype", "stdin")]
    ours = spdy.HeaderCompressor().compress([("streamtype", "stdin")])
    assert zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(ours) == raw


ALL_FRAMES: list[spdy.Frame] = [
    spdy.SynStream(1, [("streamtype", "error")], priority=3),
    spdy.SynStream(3, [("streamtype", "stdin")], flags=spdy.FLAG_FIN),
    spdy.SynReply(1, [], flags=0),
    spdy.HeadersFrame(1, [("x", "y")]),
    spdy.DataFrame(3, b"hello"),
    spdy.DataFrame(3, b"", spdy.FLAG_FIN),
    spdy.RstStream(5, spdy.RstStatus.CANCEL),
    spdy.Settings({spdy.Setting.INITIAL_WINDOW_SIZE: 1 << 20, spdy.Setting.MAX_CONCURRENT_STREAMS: 100}),
    spdy.Ping(7),
    spdy.GoAway(9, spdy.GoAwayStatus.OK),
    spdy.WindowUpdate(0, 32768),
    spdy.WindowUpdate(3, 1),
]


def test_every_frame_type_round_trips() -> None:
    enc = spdy.FrameEncoder()
    wire = b"".join(enc.encode(f) for f in ALL_FRAMES)
    assert spdy.FrameParser().feed(wire) == ALL_FRAMES


def test_known_layouts() -> None:
    enc = spdy.FrameEncoder()
    assert enc.encode(spdy.Ping(1)) == bytes.fromhex("80030006 00000004 00000001")
    assert enc.encode(spdy.DataFrame(5, b"ab", spdy.FLAG_FIN)) == bytes.fromhex("00000005 01000002 6162")
    assert enc.encode(spdy.WindowUpdate(3, 100)) == bytes.fromhex("80030009 00000008 00000003 00000064")
    assert enc.encode(spdy.RstStream(3, 5)) == bytes.fromhex("80030003 00000008 00000003 00000005")
    syn = enc.encode(spdy.SynStream(1, [("a", "b")], priority=7))
    assert syn[:4] == bytes.fromhex("80030001") and syn[8:18] == bytes.fromhex("00000001 00000000 e000")


def test_partial_reads_any_split() -> None:
    enc = spdy.FrameEncoder()
    wire = b"".join(enc.encode(f) for f in ALL_FRAMES)
    for step in (1, 3, 7, 64):
        parser = spdy.FrameParser()
        got: list[spdy.Frame] = []
        for i in range(0, len(wire), step):
            got += parser.feed(wire[i : i + step])
        assert got == ALL_FRAMES, step


def test_unknown_control_frames_are_ignored() -> None:
    noop = struct.pack(">HHI", 0x8003, 5, 0)  # SPDY/2 NOOP
    credential = struct.pack(">HHI", 0x8003, 10, 4) + b"\0\0\0\0"
    ping = spdy.FrameEncoder().encode(spdy.Ping(2))
    assert spdy.FrameParser().feed(noop + credential + ping) == [spdy.Ping(2)]


@pytest.mark.parametrize(
    "wire",
    [
        struct.pack(">HHI", 0x8002, 6, 4) + b"\0\0\0\1",  # SPDY/2
        struct.pack(">HHI", 0x8003, 6, 5) + b"\0\0\0\1\0",  # PING of the wrong size
        struct.pack(">HHI", 0x8003, 3, 8) + b"\0\0\0\0\0\0\0\1",  # RST_STREAM on stream 0
        struct.pack(">II", 0, 1) + b"x",  # data on stream 0
        struct.pack(">HHI", 0x8003, 9, 8) + b"\0\0\0\1\0\0\0\0",  # zero window delta
        struct.pack(">HHI", 0x8003, 1, 14) + b"\0\0\0\1\0\0\0\0\0\0" + b"junk",  # not zlib
        struct.pack(">HHI", 0x8003, 4, 8) + b"\0\0\0\5\0\0\0\0",  # SETTINGS count lies
    ],
)
def test_bad_frames_raise_protocol_error(wire: bytes) -> None:
    parser = spdy.FrameParser()
    with pytest.raises(spdy.ProtocolError):
        parser.feed(wire)
    with pytest.raises(spdy.ProtocolError):  # poisoned: the session must go away
        parser.feed(spdy.FrameEncoder().encode(spdy.Ping(1)))


def test_oversized_frame_is_refused_before_buffering() -> None:
    parser = spdy.FrameParser(max_payload=1024)
    with pytest.raises(spdy.ProtocolError):
        parser.feed(struct.pack(">II", 1, 4096))


def test_truncated_header_block() -> None:
    z = zlib.compressobj(zdict=spdy.DICTIONARY)
    block = z.compress(struct.pack(">I", 2) + struct.pack(">I", 1) + b"a") + z.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(spdy.ProtocolError):
        spdy.HeaderDecompressor().decompress(block)


# -- the multiplexer, two sessions wired back to back --------------------------------------
class Pipe:
    """Connects two sessions; records every frame each side sent."""

    def __init__(self) -> None:
        self.sent: dict[str, list[spdy.Frame]] = {"client": [], "server": []}
        self._parsers = {"client": spdy.FrameParser(), "server": spdy.FrameParser()}
        self.client = SpdySession(self._to("client"), server=False)
        self.server = SpdySession(self._to("server"), server=True)

    def _to(self, side: str):  # type: ignore[no-untyped-def]
        async def send(data: bytes) -> None:
            self.sent[side] += self._parsers[side].feed(data)
            peer = self.server if side == "client" else self.client
            peer.feed_data(data)
            await asyncio.sleep(0)

        return send


async def test_stream_lifecycle() -> None:
    p = Pipe()
    opened = asyncio.ensure_future(p.client.open_stream([("streamtype", "stdout")]))
    incoming = await p.server.accept()
    assert incoming is not None and incoming.header("streamType") == "stdout" and incoming.id == 1
    await incoming.reply()
    stream = await opened
    await incoming.write(b"hello ")
    await incoming.write(b"world")
    await incoming.close()
    assert await stream.read_all() == b"hello world"
    await stream.write(b"back")
    await stream.close()
    assert await incoming.read_all() == b"back"
    assert not p.client.streams and not p.server.streams  # both halves closed: forgotten


async def test_reset_wakes_the_reader() -> None:
    p = Pipe()
    opened = asyncio.ensure_future(p.client.open_stream([("streamtype", "data")]))
    incoming = await p.server.accept()
    assert incoming is not None
    await incoming.reply()
    stream = await opened
    reader = asyncio.ensure_future(incoming.read())
    await asyncio.sleep(0)
    await stream.reset()
    assert await reader == b""
    assert incoming.reset_status == spdy.RstStatus.CANCEL
    with pytest.raises(ConnectionResetError):
        await incoming.write(b"x")


async def test_ping_is_echoed_only_for_peer_ids() -> None:
    p = Pipe()
    await p.client.ping(1)
    await asyncio.sleep(0.01)
    assert spdy.Ping(1) in p.sent["server"]
    await p.server.ping(2)
    await asyncio.sleep(0.01)
    assert p.sent["client"].count(spdy.Ping(2)) == 1  # echoed once, not bounced forever


async def test_window_updates_are_granted_as_data_is_read() -> None:
    p = Pipe()
    opened = asyncio.ensure_future(p.client.open_stream([("streamtype", "stdin")]))
    incoming = await p.server.accept()
    assert incoming is not None
    await incoming.reply()
    stream = await opened
    payload = bytes(range(256)) * 1024  # 256 KiB, four times the initial window
    writer = asyncio.ensure_future(stream.write(payload))
    got = bytearray()
    while len(got) < len(payload):
        got += await incoming.read()
    await writer
    assert bytes(got) == payload
    updates = [f for f in p.sent["server"] if isinstance(f, spdy.WindowUpdate)]
    assert {u.stream_id for u in updates} == {0, stream.id}
    assert sum(u.delta for u in updates if u.stream_id == 0) >= len(payload) - spdy.INITIAL_WINDOW


async def test_sender_honours_windows_once_the_peer_uses_them() -> None:
    p = Pipe()
    opened = asyncio.ensure_future(p.client.open_stream([("streamtype", "stdout")]))
    incoming = await p.server.accept()
    assert incoming is not None
    await incoming.reply()
    stream = await opened
    p.server.feed_data(spdy.FrameEncoder().encode(spdy.WindowUpdate(0, 1)))  # peer speaks flow control
    # A server-side writer must now stop at the window until the reader consumes.
    big = b"z" * (3 * spdy.INITIAL_WINDOW)
    writer = asyncio.ensure_future(incoming.write(big))
    await asyncio.sleep(0.05)
    assert not writer.done()
    got = bytearray()
    while len(got) < len(big):
        got += await stream.read()
    await asyncio.wait_for(writer, 5)
    assert len(got) == len(big)


async def test_garbage_gets_goaway_not_a_crash() -> None:
    p = Pipe()
    p.server.feed_data(b"\x80\x03\x00\x01\x00\x00\x00\x0e" + b"\x00\x00\x00\x01" + b"\x00" * 6 + b"nope")
    await asyncio.sleep(0.01)
    assert p.sent["server"] == [spdy.GoAway(0, spdy.GoAwayStatus.PROTOCOL_ERROR)]
    assert p.server.closed.is_set()
    assert await p.server.accept() is None
    p.server.feed_data(b"more junk after the end")  # ignored, no exception


async def test_stream_id_rules() -> None:
    p = Pipe()
    enc = spdy.FrameEncoder()
    p.server.feed_data(enc.encode(spdy.SynStream(2, [("a", "b")])))  # server-parity id from a client
    p.server.feed_data(enc.encode(spdy.SynStream(5, [("a", "b")])))
    p.server.feed_data(enc.encode(spdy.SynStream(3, [("a", "b")])))  # going backwards
    p.server.feed_data(enc.encode(spdy.DataFrame(99, b"x")))  # unknown stream
    await asyncio.sleep(0.01)
    resets = [f for f in p.sent["server"] if isinstance(f, spdy.RstStream)]
    assert [(r.stream_id, r.status) for r in resets] == [
        (2, spdy.RstStatus.PROTOCOL_ERROR),
        (3, spdy.RstStatus.PROTOCOL_ERROR),
        (99, spdy.RstStatus.INVALID_STREAM),
    ]
    accepted = await p.server.accept()
    assert accepted is not None and accepted.id == 5


async def test_eof_ends_every_stream() -> None:
    p = Pipe()
    opened = asyncio.ensure_future(p.client.open_stream([("streamtype", "stdout")]))
    incoming = await p.server.accept()
    assert incoming is not None
    await incoming.reply()
    await opened
    reader = asyncio.ensure_future(incoming.read())
    await asyncio.sleep(0)
    p.server.feed_eof()
    assert await reader == b""
    assert await p.server.accept() is None


async def test_backpressure_for_peers_that_ignore_windows() -> None:
    """spdystream never waits for WINDOW_UPDATE: the session must pause the transport itself."""
    calls: list[bool] = []

    async def send(_: bytes) -> None:
        return None

    server = SpdySession(send, server=True, on_pressure=calls.append)
    enc = spdy.FrameEncoder()
    server.feed_data(enc.encode(spdy.SynStream(1, [("streamtype", "stdin")])))
    stream = await server.accept()
    assert stream is not None
    chunk = b"q" * 65536
    for _ in range(20):  # 1.25 MiB, far past any window
        server.feed_data(enc.encode(spdy.DataFrame(1, chunk)))
    assert calls == [True]
    total = 0
    while total < 20 * len(chunk):
        total += len(await stream.read())
    assert calls == [True, False]
