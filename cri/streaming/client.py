"""The client side of the same protocols, for our CLI (`kubeletpy crictl exec`) and for tests
that need protocol variants kubectl never sends (v2/v3, base64, websocket port channels)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl as ssl_mod
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from cri.streaming import remotecommand as rc
from cri.streaming.session import SpdySession, SpdyStream


class UpgradeError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused: HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int
    status: Any  # the v4/v5 Status dict, or the v2/v3 error text


class SpdyClient:
    """An upgraded client connection; `session` opens streams, close() hangs up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str) -> None:
        self.protocol = protocol
        self._writer = writer
        self.session = SpdySession(self._send, server=False)
        self._pump = asyncio.ensure_future(self._read(reader))

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                self.session.feed_data(data)
        except (ConnectionError, ssl_mod.SSLError):
            pass  # the server may still be talking (GOAWAY, window updates) while we hang up
        finally:
            self.session.feed_eof()

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._pump
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def spdy_connect(
    url: str, protocols: list[str], *, ssl: ssl_mod.SSLContext | None = None, method: str = "POST"
) -> SpdyClient:
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    port = parts.port or (443 if secure else 80)
    if secure and ssl is None:
        ssl = ssl_mod.create_default_context()
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ssl if secure else None)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "Content-Length: 0",
        *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
    if status != 101:
        body = b""
        with contextlib.suppress(Exception):
            body = await asyncio.wait_for(reader.read(65536), 2)
        writer.close()
        raise UpgradeError(status, body)
    return SpdyClient(reader, writer, headers.get("x-stream-protocol-version", ""))


def exit_code_of(status: Any) -> int:
    if not status:
        return 0
    if isinstance(status, str):
        return 1
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes", []):
        if cause.get("reason") == "ExitCode":
            return int(cause["message"])
    return 1


def _query_flags(url: str) -> dict[str, bool]:
    q = parse_qs(urlsplit(url).query)
    return {k: q.get(k, [""])[0].lower() in ("1", "true") for k in ("stdin", "stdout", "stderr", "tty")}


async def _feed_stdin(writer: Any, data: bytes | None) -> None:
    if data:
        await writer.write(data)
    await writer.close()


async def exec_spdy(
    url: str,
    *,
    stdin: bytes | None = None,
    protocols: list[str] | None = None,
    resize: list[tuple[int, int]] | None = None,
    ssl: ssl_mod.SSLContext | None = None,
    flags: dict[str, bool] | None = None,
) -> ExecResult:
    """Run one exec the way client-go does: error stream first, then the others. Which
    streams to open comes from the URL's query unless `flags` says (CRI token URLs)."""
    flags = {**_query_flags(url), **(flags or {})}
    client = await spdy_connect(url, protocols or [rc.V4, rc.V3, rc.V2], ssl=ssl)
    try:
        s = client.session
        streams: dict[str, SpdyStream] = {"error": await s.open_stream([("streamtype", "error")])}
        if flags["stdin"]:
            streams["stdin"] = await s.open_stream([("streamtype", "stdin")])
        if flags["stdout"]:
            streams["stdout"] = await s.open_stream([("streamtype", "stdout")])
        if flags["stderr"] and not flags["tty"]:
            streams["stderr"] = await s.open_stream([("streamtype", "stderr")])
        if flags["tty"] and client.protocol in (rc.V3, rc.V4):
            streams["resize"] = await s.open_stream([("streamtype", "resize")])
            for w, h in resize or []:
                await streams["resize"].write(json.dumps({"Width": w, "Height": h}).encode() + b"\n")
        if "stdin" in streams:
            await _feed_stdin(streams["stdin"], stdin)

        async def drain(name: str) -> bytes:
            return await streams[name].read_all() if name in streams else b""

        out, err, error = await asyncio.gather(drain("stdout"), drain("stderr"), drain("error"))
        status: Any = error.decode()
        if client.protocol == rc.V4 and error:
            status = json.loads(error)
        return ExecResult(out, err, exit_code_of(status), status)
    finally:
        await client.close()


async def exec_websocket(
    http: aiohttp.ClientSession,
    url: str,
    *,
    stdin: bytes | None = None,
    protocol: str = rc.V5,
    resize: list[tuple[int, int]] | None = None,
) -> ExecResult:
    b64 = "base64" in protocol
    out: dict[int, bytearray] = {rc.STDOUT: bytearray(), rc.STDERR: bytearray(), rc.ERROR: bytearray()}
    async with http.ws_connect(url, protocols=[protocol]) as ws:
        if ws.protocol != protocol:
            raise UpgradeError(101, b"subprotocol not accepted")

        async def send(channel: int, data: bytes) -> None:
            if b64:
                await ws.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
            else:
                await ws.send_bytes(bytes([channel]) + data)

        for w, h in resize or []:
            await send(rc.RESIZE, json.dumps({"Width": w, "Height": h}).encode())
        if stdin is not None:
            if stdin:
                await send(rc.STDIN, stdin)
            if protocol == rc.V5:
                await ws.send_bytes(bytes([rc.CLOSE, rc.STDIN]))
        async for msg in ws:
            decoded = rc.decode_channel_message(msg.type, msg.data, b64)
            if decoded and decoded[0] in out:
                out[decoded[0]] += decoded[1]
    error = bytes(out[rc.ERROR])
    status: Any = error.decode()
    if protocol in (rc.V5, rc.V4, rc.V4_BASE64) and error:
        status = json.loads(error)
    return ExecResult(bytes(out[rc.STDOUT]), bytes(out[rc.STDERR]), exit_code_of(status), status)


class PortForwardClient:
    """`portforward.k8s.io` over SPDY: one stream pair per forwarded connection."""

    def __init__(self, client: SpdyClient) -> None:
        self.client = client
        self._next_request = 0

    @classmethod
    async def connect(cls, url: str, *, ssl: ssl_mod.SSLContext | None = None) -> PortForwardClient:
        return cls(await spdy_connect(url, ["portforward.k8s.io"], ssl=ssl))

    async def open(self, port: int) -> tuple[SpdyStream, SpdyStream]:
        """(data, error) streams for one connection to `port`."""
        rid = str(self._next_request)
        self._next_request += 1
        base = [("port", str(port)), ("requestid", rid)]
        error = await self.client.session.open_stream([("streamtype", "error"), *base])
        await error.close()
        data = await self.client.session.open_stream([("streamtype", "data"), *base])
        return data, error

    async def close(self) -> None:
        await self.client.close()
