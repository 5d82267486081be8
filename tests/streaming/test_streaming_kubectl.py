"""The real kubectl (1.27 ... 1.33) against the fake API server mounting our handlers.

kubectl <= 1.29 exec over SPDY/3.1; >= 1.30 try websocket v5.channel.k8s.io first. Port-forward
is SPDY everywhere: plain before 1.31, tunnelled in websocket messages from 1.31.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import FakeAPI

SPDY_ERA = ["1.27", "1.29"]
WEBSOCKET_ERA = ["1.32", "1.33"]
NO_WEBSOCKETS = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


def transport_of(api: FakeAPI, since: int, subresource: str) -> tuple[str, str, str]:
    """(method, Upgrade, offered protocols) of the subresource request kubectl made last."""
    for method, path, headers in reversed(api.requests[since:]):
        if f"/{subresource}" in path:
            offered = headers.get("Sec-WebSocket-Protocol") or headers.get("X-Stream-Protocol-Version", "")
            return method, headers.get("Upgrade", ""), offered
    raise AssertionError(f"kubectl made no {subresource} request")


def expected_transport(version: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    if version in SPDY_ERA or env:
        return "POST", "SPDY/3.1"
    return "GET", "websocket"


def test_all_kubectl_versions_are_installed(fake_api: FakeAPI) -> None:
    for version in SPDY_ERA + WEBSOCKET_ERA:
        assert fake_api.kubectl_path(version).exists(), f"kubectl {version} is needed for these tests"


@pytest.mark.parametrize("version", SPDY_ERA + WEBSOCKET_ERA)
def test_exec_output_and_exit_code(fake_api: FakeAPI, version: str) -> None:
    mark = len(fake_api.requests)
    r = fake_api.kubectl(version, "exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.stdout == b"out\n"
    assert b"err\n" in r.stderr and b"command terminated with exit code 7" in r.stderr
    assert r.returncode == 7
    method, upgrade, offered = transport_of(fake_api, mark, "exec")
    assert (method, upgrade) == expected_transport(version)
    if version in WEBSOCKET_ERA:
        assert offered == "v5.channel.k8s.io"


@pytest.mark.parametrize("version", SPDY_ERA + WEBSOCKET_ERA)
def test_exec_piped_stdin(fake_api: FakeAPI, version: str) -> None:
    payload = os.urandom(3_000_000)  # past the 1 MiB pause threshold both ways
    r = fake_api.kubectl(version, "exec", "-i", "web", "--", "sh", "-c", "cat; echo done >&2", input=payload)
    assert r.returncode == 0, r.stderr
    assert r.stdout == payload
    assert r.stderr == b"done\n"


def test_exec_spdy_fallback_on_new_kubectl(fake_api: FakeAPI) -> None:
    mark = len(fake_api.requests)
    r = fake_api.kubectl("1.33", "exec", "web", "--", "sh", "-c", "exit 9", env=NO_WEBSOCKETS)
    assert r.returncode == 9
    assert transport_of(fake_api, mark, "exec")[:2] == ("POST", "SPDY/3.1")


def _read_until(fd: int, want: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while want not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@pytest.mark.parametrize("version", ["1.27", "1.32"])
def test_exec_tty_with_resize(fake_api: FakeAPI, version: str) -> None:
    """kubectl -t needs a terminal: give it a pty, then resize that pty mid-session."""
    master, slave = os.openpty()
    _set_size(slave, 40, 100)
    script = "stty size; read line; stty size; exit 4"
    proc = fake_api.kubectl_popen(
        version,
        "exec",
        "-it",
        "web",
        "--",
        "sh",
        "-c",
        script,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        assert b"40 100" in _read_until(master, b"40 100", 15)
        _set_size(master, 30, 120)
        os.kill(proc.pid, signal.SIGWINCH)
        time.sleep(0.5)  # the resize message races the line we type next
        os.write(master, b"go\r")
        out = _read_until(master, b"exit code 4", 15)
        assert b"30 120" in out
        assert proc.wait(15) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.mark.parametrize("version", ["1.27", "1.32"])
def test_attach_with_stdin(fake_api: FakeAPI, version: str) -> None:
    # The fake pod's main process is `echo attached; cat; exit 3`.
    r = fake_api.kubectl(version, "attach", "-i", "web", input=b"typed\n")
    assert r.stdout == b"attached\ntyped\n"
    assert r.returncode == 0  # as from a real kubelet: attach does not report the process's exit code


def _forward(api: FakeAPI, version: str, env: dict[str, str] | None) -> None:
    local = api.free_port()
    proc = api.kubectl_popen(
        version,
        "port-forward",
        "pod/web",
        f"{local}:80",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        assert b"Forwarding from 127.0.0.1" in _read_until(proc.stdout.fileno(), b"\n", 15)
        for size in (5, 200_000):  # two connections; the second is several SPDY windows long
            payload = os.urandom(size).hex().encode()[:size].lower()
            with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := conn.recv(65536):
                    got += chunk
            assert got == payload.upper()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("version", SPDY_ERA + WEBSOCKET_ERA)
def test_port_forward(fake_api: FakeAPI, echo_port: int, version: str) -> None:
    mark = len(fake_api.requests)
    _forward(fake_api, version, None)
    method, upgrade, offered = transport_of(fake_api, mark, "portforward")
    if version in WEBSOCKET_ERA:
        assert (method, upgrade, offered) == ("GET", "websocket", "SPDY/3.1+portforward.k8s.io")
    else:
        assert (method, upgrade, offered) == ("POST", "SPDY/3.1", "portforward.k8s.io")


def test_port_forward_plain_spdy_on_new_kubectl(fake_api: FakeAPI, echo_port: int) -> None:
    mark = len(fake_api.requests)
    _forward(fake_api, "1.33", NO_WEBSOCKETS)
    assert transport_of(fake_api, mark, "portforward")[:2] == ("POST", "SPDY/3.1")


@pytest.mark.parametrize("version", ["1.27", "1.32"])
def test_plain_http_server(fake_api: FakeAPI, version: str) -> None:
    """The same handlers behind a plain-TCP site: the SPDY hijack works without TLS too."""
    r = fake_api.kubectl(
        version, "exec", "-i", "web", "--", "sh", "-c", "cat; exit 5", input=b"plain", plain_http=True
    )
    assert (r.stdout, r.returncode) == (b"plain", 5)
