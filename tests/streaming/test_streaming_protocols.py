"""Every protocol variant the handlers speak, driven by our own client over HTTPS (kubectl
only ever uses some of them: see test_streaming_kubectl.py for the real client)."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiohttp
import pytest

from cri.streaming import ExecOptions, spdy
from cri.streaming import remotecommand as rc
from cri.streaming.client import PortForwardClient, UpgradeError, exec_spdy, exec_websocket, spdy_connect

if TYPE_CHECKING:
    from conftest import FakeAPI

POD = "/api/v1/namespaces/default/pods/p"


def exec_url(api: FakeAPI, script: str, scheme: str = "https", **flags: bool) -> str:
    query = [("command", "sh"), ("command", "-c"), ("command", script)]
    query += [(k, "true") for k, v in {"stdout": True, "stderr": True, **flags}.items() if v]
    return f"{api.url.replace('https', scheme)}{POD}/exec?{urlencode(query)}"


async def test_spdy_v4_success_and_exit_code(fake_api: FakeAPI, client_ssl: ssl.SSLContext) -> None:
    ok = await exec_spdy(exec_url(fake_api, "echo out; echo err >&2"), ssl=client_ssl)
    assert (ok.stdout, ok.stderr, ok.exit_code, ok.status) == (b"out\n", b"err\n", 0, rc.status_success())
    bad = await exec_spdy(exec_url(fake_api, "exit 42"), ssl=client_ssl)
    assert bad.exit_code == 42
    assert bad.status["reason"] == "NonZeroExitCode"
    assert bad.status["details"]["causes"] == [{"reason": "ExitCode", "message": "42"}]


@pytest.mark.parametrize("protocol", [rc.V3, rc.V2])
async def test_spdy_v2_v3_error_text(fake_api: FakeAPI, client_ssl: ssl.SSLContext, protocol: str) -> None:
    ok = await exec_spdy(exec_url(fake_api, "echo hi"), protocols=[protocol], ssl=client_ssl)
    assert (ok.stdout, ok.status, ok.exit_code) == (b"hi\n", "", 0)
    bad = await exec_spdy(exec_url(fake_api, "exit 3"), protocols=[protocol], ssl=client_ssl)
    assert bad.status == "command terminated with non-zero exit code: exit status 3"


async def test_spdy_large_stdin_and_stdout(fake_api: FakeAPI, client_ssl: ssl.SSLContext) -> None:
    """Several windows' worth each way: WINDOW_UPDATEs have to flow for this to finish."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    res = await exec_spdy(exec_url(fake_api, "cat", stdin=True), stdin=payload, ssl=client_ssl)
    assert res.exit_code == 0 and res.stdout == payload


async def test_spdy_tty_resize(fake_api: FakeAPI, client_ssl: ssl.SSLContext) -> None:
    url = exec_url(fake_api, "stty size", tty=True, stderr=False)
    res = await exec_spdy(url, resize=[(91, 17)], ssl=client_ssl)
    assert res.stdout.strip() == b"17 91" and res.exit_code == 0


async def test_spdy_unknown_executable(fake_api: FakeAPI, client_ssl: ssl.SSLContext) -> None:
    query = urlencode([("command", "/no/such/binary"), ("stdout", "true")])
    res = await exec_spdy(f"{fake_api.url}{POD}/exec?{query}", ssl=client_ssl)
    assert res.exit_code == 1
    assert res.status["reason"] == "InternalError" and "/no/such/binary" in res.status["message"]


async def test_spdy_protocol_negotiation_refused(fake_api: FakeAPI, client_ssl: ssl.SSLContext) -> None:
    with pytest.raises(UpgradeError) as err:
        await exec_spdy(exec_url(fake_api, "true"), protocols=["v9.channel.k8s.io"], ssl=client_ssl)
    assert err.value.status == 403
    assert b"unable to negotiate protocol" in err.value.body


async def test_bad_requests(fake_api: FakeAPI, client_ssl: ssl.SSLContext) -> None:
    with pytest.raises(UpgradeError) as err:
        await exec_spdy(f"{fake_api.url}{POD}/exec?stdout=true", ssl=client_ssl)  # no command
    assert err.value.status == 400 and b"command" in err.value.body
    with pytest.raises(UpgradeError) as err:
        await exec_spdy(f"{fake_api.url}{POD}/exec?command=true", ssl=client_ssl)  # no streams
    assert err.value.status == 400
    async with aiohttp.ClientSession() as http:
        async with http.post(exec_url(fake_api, "true"), ssl=client_ssl) as resp:  # no upgrade at all
            assert resp.status == 400
            body = await resp.json()
            assert (body["kind"], body["reason"]) == ("Status", "BadRequest")
        # A websocket subprotocol we do not speak gets a non-101, so kubectl falls back to SPDY.
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(
                exec_url(fake_api, "true", scheme="wss"), protocols=["v9.channel.k8s.io"], ssl=client_ssl
            )


@pytest.mark.parametrize("protocol", [rc.V5, rc.V4, rc.V1, rc.V4_BASE64, rc.V1_BASE64])
async def test_websocket_channels(fake_api: FakeAPI, client_ssl: ssl.SSLContext, protocol: str) -> None:
    url = exec_url(fake_api, "echo out; echo err >&2; exit 2", scheme="wss")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as http:
        res = await exec_websocket(http, url, protocol=protocol)
    assert (res.stdout, res.stderr) == (b"out\n", b"err\n")
    if protocol in (rc.V5, rc.V4, rc.V4_BASE64):
        assert res.exit_code == 2 and res.status["details"]["causes"][0]["message"] == "2"
    else:
        assert res.status == "command terminated with non-zero exit code: exit status 2"


async def test_websocket_v5_stdin_close_and_tty(fake_api: FakeAPI, client_ssl: ssl.SSLContext) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as http:
        res = await exec_websocket(
            http, exec_url(fake_api, "wc -c", scheme="wss", stdin=True), stdin=b"x" * 100000
        )
        assert res.stdout.strip() == b"100000" and res.exit_code == 0
        tty = exec_url(fake_api, "stty size", scheme="wss", tty=True, stderr=False)
        res = await exec_websocket(http, tty, resize=[(120, 33)])
        assert res.stdout.strip() == b"33 120"


async def test_spdy_portforward(fake_api: FakeAPI, client_ssl: ssl.SSLContext, echo_port: int) -> None:
    pf = await PortForwardClient.connect(f"{fake_api.url}{POD}/portforward", ssl=client_ssl)
    try:
        for _ in range(3):  # several connections on one session
            data, error = await pf.open(80)
            await data.write(b"abc" * 50000)
            await data.close()
            assert await data.read_all() == b"ABC" * 50000
            assert await error.read_all() == b""
        data, error = await pf.open(81)  # nothing listens there
        assert b"error forwarding port 81" in await error.read_all()
        assert await data.read_all() == b""
    finally:
        await pf.close()


async def test_websocket_portforward_channels(
    fake_api: FakeAPI, client_ssl: ssl.SSLContext, echo_port: int
) -> None:
    url = f"{fake_api.url.replace('https', 'wss')}{POD}/portforward?port=80&port=81"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as http:
        async with http.ws_connect(url, protocols=["v4.channel.k8s.io"]) as ws:
            assert ws.protocol == "v4.channel.k8s.io"
            first = {}
            while len(first) < 4:  # the port, little-endian, opens each of the 4 channels
                msg = await ws.receive_bytes(timeout=5)
                first.setdefault(msg[0], msg[1:])
            assert first == {
                0: struct.pack("<H", 80),
                1: struct.pack("<H", 80),
                2: struct.pack("<H", 81),
                3: struct.pack("<H", 81),
            }
            await ws.send_bytes(b"\x00hello")
            got = {}
            while 0 not in got or 3 not in got:
                msg = await ws.receive_bytes(timeout=5)
                got[msg[0]] = got.get(msg[0], b"") + msg[1:]
            assert got[0] == b"HELLO"
            assert b"error forwarding port 81" in got[3]


def test_status_shapes_match_the_kubelet() -> None:
    assert json.loads(json.dumps(rc.status_exit_code(1)))["details"]["causes"] == [
        {"reason": "ExitCode", "message": "1"}
    ]
    assert rc.normalise_exit_code(-9) == 137 and rc.normalise_exit_code(300) == 255


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
async def test_process_dies_when_the_client_leaves(
    fake_api: FakeAPI, client_ssl: ssl.SSLContext, tmp_path: Path, transport: str
) -> None:
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; exec sleep 60"
    if transport == "spdy":
        client = await spdy_connect(exec_url(fake_api, script), [rc.V4], ssl=client_ssl)
        for kind in ("error", "stdout", "stderr"):
            await client.session.open_stream([("streamtype", kind)])
        await _wait_for(pid_file.exists)
        assert _alive(pid_file)
        await client.close()
    else:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as http:
            async with http.ws_connect(exec_url(fake_api, script, scheme="wss"), protocols=[rc.V5]):
                await _wait_for(pid_file.exists)
                assert _alive(pid_file)
    await _wait_for(lambda: not _alive(pid_file))


async def test_cri_token_url_over_plain_http(fake_api: FakeAPI) -> None:
    """The CRI streaming server's shape: options stored with a token, no query, plain HTTP."""
    fake_api.tokens["t0k"] = ExecOptions(
        command=["sh", "-c", "cat; exit 6"], stdin=True, stdout=True, stderr=True
    )
    res = await exec_spdy(
        f"{fake_api.plain_url}/exec/t0k",
        stdin=b"via token",
        flags={"stdin": True, "stdout": True, "stderr": True},
    )
    assert (res.stdout, res.exit_code) == (b"via token", 6)
    with pytest.raises(UpgradeError) as err:
        await exec_spdy(f"{fake_api.plain_url}/exec/unknown")
    assert err.value.status == 404


async def test_resize_parser_survives_garbage() -> None:
    sizes = rc._ResizeQueue()
    rest = sizes.feed_json('{"Width":80,"Height":24}\n{"Width":1')
    assert rest == '{"Width":1'
    rest = sizes.feed_json(
        rest + '00,"Height":50}junk{"Width":"x","Height":1}{"Height":2}[1]{"Width":7,"Height":8}'
    )
    sizes.put(None)
    assert [s async for s in sizes] == [(80, 24), (100, 50), (7, 8)]
    assert rest == ""


async def test_garbage_after_upgrade_gets_goaway(fake_api: FakeAPI) -> None:
    host, port = fake_api.plain_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {POD}/exec?command=true&stdout=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101") and b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
    writer.write(
        b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01" + b"\x00" * 6 + b"junk"
    )  # SYN_STREAM, bad zlib
    rest = await asyncio.wait_for(reader.read(), 10)  # the server hangs up after its GOAWAY
    assert spdy.FrameParser().feed(rest) == [spdy.GoAway(0, spdy.GoAwayStatus.PROTOCOL_ERROR)]
    writer.close()
    ok = await exec_spdy(exec_url(fake_api, "echo still fine").replace(fake_api.url, fake_api.plain_url))
    assert ok.stdout == b"still fine\n"
