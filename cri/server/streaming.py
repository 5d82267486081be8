"""The CRI streaming server: what the URLs returned by Exec/Attach/PortForward point at.

As in containerd, the gRPC call only validates the request and stores it under a
random single-use token with an expiry; the client (the kubelet's proxy, crictl,
kubectl through the API server) then connects to
`http://<stream-address>/{exec,attach,portforward}/<token>` and speaks SPDY or
websocket there, handled by cri.streaming. The aiohttp server runs its own event
loop in its own thread, so slow or stuck streams never take gRPC workers.

Backends:
- exec: the runtime's exec facility (the pod shim forks the process into the
  container), with pipes, or a pty whose size follows the client's resizes;
- attach: output follows the container's CRI log from its end (the shim writes the
  log, it does not multiplex live output); stdin and tty resizes go to the
  container through the shim;
- port-forward: a TCP socket created inside the pod's netns, connecting to
  127.0.0.1:port there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cni.netns import open_netns, run_in_netns
from cri.runtime import ContainerState
from cri.runtime import errors as rt_errors
from cri.runtime.shimclient import ExecStartError, ShimError
from cri.streaming import ExecError, ExecIO, ExecOptions, serve_exec, serve_portforward
from cri.streaming.local import set_winsize
from cri.streaming.server import status_response

log = logging.getLogger("kubeletpy.cri.streaming")

TOKEN_TTL = 60.0          # containerd's default stream idle / token lifetime is on the order of a minute
READ_SIZE = 32 * 1024
EXIT_GRACE = 0.5          # after exit, how long leftover output (pipes held by daemonized children) may trickle


@dataclass
class _Request:
    kind: str               # exec | attach | portforward
    expires: float
    options: ExecOptions | None = None
    sandbox_id: str = ""
    ports: tuple[int, ...] = ()


class TokenCache:
    """Single-use tokens with an expiry; written by gRPC threads, consumed by the aiohttp loop."""

    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[str, _Request] = {}

    def put(self, req: _Request) -> str:
        token = secrets.token_urlsafe(12)
        now = time.monotonic()
        with self._lock:
            for t in [t for t, r in self._items.items() if r.expires < now]:
                del self._items[t]
            req.expires = now + self.ttl
            self._items[token] = req
        return token

    def pop(self, token: str, kind: str) -> _Request | None:
        with self._lock:
            req = self._items.get(token)
            if req is None or req.kind != kind:
                return None
            del self._items[token]
        return req if req.expires >= time.monotonic() else None


# ---- fd plumbing on the event loop ----------------------------------------------------------

def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _read_fd(fd: int, n: int = READ_SIZE) -> bytes:
    """Non-blocking read; b"" at EOF (EIO on a pty master whose slaves are all closed counts as EOF)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, n)
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, fut)
        try:
            await fut
        finally:
            loop.remove_reader(fd)


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
            continue
        except BlockingIOError:
            pass
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_writer(fd, _wake, fut)
        try:
            await fut
        finally:
            loop.remove_writer(fd)


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class ContainerExecBackend:
    """cri.streaming.ExecBackend over the runtime; `options.container` is the container id."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    async def _start(self, cid: str, cmd: list[str], stdio: tuple[int, int, int]) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self.runtime.exec, cid, cmd, stdio, 0)
        except ExecStartError as e:
            raise ExecError(f"OCI runtime exec failed: {e}") from None
        except (rt_errors.RuntimeError_, ShimError) as e:
            raise ExecError(str(e)) from None

    async def exec(self, options: ExecOptions, io: ExecIO) -> int:
        if options.tty:
            return await self._exec_tty(options, io)
        return await self._exec_pipes(options, io)

    async def _exec_pipes(self, options: ExecOptions, io: ExecIO) -> int:
        loop = asyncio.get_running_loop()
        in_r = in_w = -1
        if io.stdin is not None:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
        else:
            in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        proc = None
        tasks: list[asyncio.Future[Any]] = []
        try:
            try:
                proc = await self._start(options.container, options.command, (in_r, out_w, err_w))
            finally:
                _close(in_r, out_w, err_w)
            for fd in (in_w, out_r, err_r):
                if fd >= 0:
                    os.set_blocking(fd, False)

            async def copy_out(fd: int, dst: Any) -> None:
                while chunk := await _read_fd(fd):
                    if dst is not None:
                        with contextlib.suppress(ConnectionError):
                            await dst.write(chunk)

            async def copy_in(fd: int) -> None:
                assert io.stdin is not None
                try:
                    while chunk := await io.stdin.read(READ_SIZE):
                        await _write_fd(fd, chunk)
                except OSError:
                    pass  # the process closed its stdin (EPIPE): fine, like a shell pipe
                finally:
                    _close(fd)

            outs = [asyncio.ensure_future(copy_out(out_r, io.stdout)),
                    asyncio.ensure_future(copy_out(err_r, io.stderr))]
            tasks += outs
            if io.stdin is not None:
                tasks.append(asyncio.ensure_future(copy_in(in_w)))
                in_w = -1  # copy_in owns it now
            code = await loop.run_in_executor(None, proc.wait)
            await asyncio.wait(outs, timeout=EXIT_GRACE)
            return int(code)
        finally:
            for t in tasks:
                t.cancel()
            if proc is not None and proc.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)  # the client went away: don't leave it running
            _close(in_w, out_r, err_r)

    async def _exec_tty(self, options: ExecOptions, io: ExecIO) -> int:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        sizes = aiter(io.resize)
        # The client sends its size right after the streams open; a shell started before it
        # arrives would see 0x0 and wrap lines wrongly.
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            set_winsize(master, await asyncio.wait_for(anext(sizes), 0.5))
        proc = None
        helpers: list[asyncio.Future[Any]] = []
        try:
            try:
                proc = await self._start(options.container, options.command, (slave, slave, slave))
            finally:
                _close(slave)
            os.set_blocking(master, False)

            async def pump_in() -> None:
                assert io.stdin is not None
                with contextlib.suppress(OSError, ConnectionError):
                    while chunk := await io.stdin.read(READ_SIZE):
                        await _write_fd(master, chunk)
                    await _write_fd(master, b"\x04")  # EOF on a terminal is ^D, not a close

            async def follow_resize() -> None:
                async for size in sizes:
                    with contextlib.suppress(OSError):
                        set_winsize(master, size)

            async def pump_out() -> None:
                while chunk := await _read_fd(master):
                    if io.stdout is not None:
                        with contextlib.suppress(ConnectionError):
                            await io.stdout.write(chunk)

            helpers.append(asyncio.ensure_future(follow_resize()))
            if io.stdin is not None:
                helpers.append(asyncio.ensure_future(pump_in()))
            out = asyncio.ensure_future(pump_out())
            helpers.append(out)
            code = await loop.run_in_executor(None, proc.wait)
            await asyncio.wait([out], timeout=EXIT_GRACE)
            return int(code)
        finally:
            for h in helpers:
                h.cancel()
            if proc is not None and proc.exit_code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            _close(master)

    async def attach(self, options: ExecOptions, io: ExecIO) -> int:
        """Live output from the container's CRI log (from now on) until it exits; stdin and terminal
        resizes go to the container through the shim (runtime.attach_stdin / resize_container_tty)."""
        loop = asyncio.get_running_loop()
        rt = self.runtime
        try:
            st = await loop.run_in_executor(None, rt.container_status, options.container)
        except rt_errors.RuntimeError_ as e:
            raise ExecError(str(e)) from None
        if st.state != ContainerState.CONTAINER_RUNNING:
            raise ExecError(f"container {st.id} is not running")
        stdin_fd = -1
        if options.stdin and io.stdin is not None:
            try:
                stdin_fd, _ = await loop.run_in_executor(None, rt.attach_stdin, st.id)
            except rt_errors.RuntimeError_ as e:
                raise ExecError(str(e)) from None
            os.set_blocking(stdin_fd, False)
        try:
            f = open(st.log_path, "rb")  # noqa: SIM115 - closed in finally
        except OSError as e:
            _close(stdin_fd)
            raise ExecError(f"attach: cannot open the container log: {e}") from None
        f.seek(0, os.SEEK_END)
        helpers: list[asyncio.Future[Any]] = []

        async def pump_in(fd: int) -> None:
            assert io.stdin is not None
            try:
                while chunk := await io.stdin.read(READ_SIZE):
                    await _write_fd(fd, chunk)
            except OSError:
                pass
            finally:
                _close(fd)  # our end: with stdin_once the container sees EOF

        async def follow_resize() -> None:
            async for size in io.resize:
                with contextlib.suppress(rt_errors.RuntimeError_):
                    await loop.run_in_executor(None, rt.resize_container_tty, st.id, size.height, size.width)

        if stdin_fd >= 0:
            helpers.append(asyncio.ensure_future(pump_in(stdin_fd)))
            stdin_fd = -1
        if options.tty:
            helpers.append(asyncio.ensure_future(follow_resize()))
        try:
            buf = b""
            idle = 0.0
            while True:
                chunk = f.read(READ_SIZE)
                if not chunk:
                    await asyncio.sleep(0.05)
                    idle += 0.05
                    if idle < 0.5:
                        continue
                    idle = 0.0
                    cur = await loop.run_in_executor(None, rt.container_status, st.id)
                    if cur.state == ContainerState.CONTAINER_RUNNING:
                        continue
                    chunk = f.read()
                    if not chunk:
                        return int(cur.exit_code)
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    parts = line.split(b" ", 3)
                    if len(parts) < 4:
                        continue
                    _, stream, tag, msg = parts
                    data = msg if tag == b"P" else msg + b"\n"
                    dst = io.stderr if stream == b"stderr" and io.stderr is not None else io.stdout
                    if dst is not None:
                        with contextlib.suppress(ConnectionError):
                            await dst.write(data)
        finally:
            for h in helpers:
                h.cancel()
            f.close()


class SandboxPortForward:
    """cri.streaming.PortForwardBackend: connect to 127.0.0.1:port inside one pod's netns."""

    def __init__(self, runtime: Any, sandbox_id: str, allowed: tuple[int, ...] = ()) -> None:
        self.runtime, self.sandbox_id, self.allowed = runtime, sandbox_id, allowed

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        if self.allowed and port not in self.allowed:
            raise OSError(f"port {port} was not requested in PortForward (ports {list(self.allowed)})")
        st = await loop.run_in_executor(None, self.runtime.pod_sandbox_status, self.sandbox_id)
        if st.netns_path:
            fd = open_netns(st.netns_path)
            try:
                sock = run_in_netns(fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            finally:
                os.close(fd)
        else:  # host-network pod: its localhost is ours
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)


class StreamServer:
    """aiohttp on its own loop and thread; `url_for_*` hand out token URLs for the gRPC handlers."""

    def __init__(self, runtime: Any, address: str = "127.0.0.1:0", ttl: float = TOKEN_TTL) -> None:
        self.runtime = runtime
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port or 0)
        self.tokens = TokenCache(ttl)
        self.exec_backend = ContainerExecBackend(runtime)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # noqa: BLE001 - reported to start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="cri-streaming", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]

    async def _serve(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        for kind, handler in (("exec", self._exec), ("attach", self._attach), ("portforward", self._portforward)):
            app.router.add_route("GET", f"/{kind}/{{token}}", handler)
            app.router.add_route("POST", f"/{kind}/{{token}}", handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{port}"

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    # ---- URLs (called from gRPC threads) -----------------------------------------------
    def url_for_exec(self, options: ExecOptions, attach: bool = False) -> str:
        kind = "attach" if attach else "exec"
        token = self.tokens.put(_Request(kind, 0.0, options=options))
        return f"{self.base_url}/{kind}/{token}"

    def url_for_portforward(self, sandbox_id: str, ports: list[int]) -> str:
        token = self.tokens.put(_Request("portforward", 0.0, sandbox_id=sandbox_id, ports=tuple(ports)))
        return f"{self.base_url}/portforward/{token}"

    # ---- handlers ----------------------------------------------------------------------
    def _take(self, request: web.Request, kind: str) -> _Request | web.Response:
        req = self.tokens.pop(request.match_info["token"], kind)
        if req is None:
            return status_response(404, "NotFound", "unknown or expired stream token")
        return req

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        req = self._take(request, "exec")
        if isinstance(req, web.Response):
            return req
        return await serve_exec(request, self.exec_backend, options=req.options)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        req = self._take(request, "attach")
        if isinstance(req, web.Response):
            return req
        return await serve_exec(request, self.exec_backend, attach=True, options=req.options)

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        req = self._take(request, "portforward")
        if isinstance(req, web.Response):
            return req
        # Like containerd, the ports of the request are advisory: the client names them per stream.
        return await serve_portforward(request, SandboxPortForward(self.runtime, req.sandbox_id))
