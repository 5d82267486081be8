"""Talking to per-pod shims, and starting them through a zygote.

Why a zygote: starting a Python interpreter costs tens of ms on a small VM,
more than the whole sandbox budget, and each interpreter's imported modules
cost ~2 MiB. The runtime keeps one pre-started shim process (the zygote) that
forks a shim per pod: a fork is ~1 ms, and the module pages stay shared.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading

from cri.shim.server import with_short_path

SHIM_MAIN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "shim", "main.py")


class ShimError(Exception):
    pass


class ShimGone(ShimError):
    """The shim's socket is missing or refuses connections: the shim is not running."""


def _connect(sock_path: str, timeout: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        with_short_path(sock_path, s.connect)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        s.close()
        raise ShimGone(f"shim at {sock_path} is not running ({e.strerror})") from None
    return s


def _readline(s: socket.socket, buf: bytearray) -> dict:
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ShimError("shim closed the connection without a reply")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


def call(sock_path: str, req: dict, fds: list[int] | None = None, timeout: float | None = 30.0) -> dict:
    """One request, one reply. `timeout` None waits forever (used by `wait`)."""
    s = _connect(sock_path, timeout)
    try:
        data = json.dumps(req).encode() + b"\n"
        if fds:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            s.sendall(data)
        return _readline(s, bytearray())
    except TimeoutError:
        raise
    except OSError as e:
        raise ShimError(f"shim at {sock_path}: {e}") from None
    finally:
        s.close()


def send(sock_path: str, req: dict, timeout: float = 1.0) -> None:
    """Fire and forget: deliver one request and don't wait for the reply (the shim's reply to a
    closed connection is dropped). Raises ShimError (ShimGone) if it can't be delivered."""
    s = _connect(sock_path, timeout)
    try:
        s.sendall(json.dumps(req).encode() + b"\n")
    except OSError as e:
        raise ShimError(f"shim at {sock_path}: {e}") from None
    finally:
        s.close()


def call_recv_fds(sock_path: str, req: dict, timeout: float | None = 30.0) -> tuple[dict, list[int]]:
    """Like call(), for replies that carry file descriptors (attach)."""
    s = _connect(sock_path, timeout)
    try:
        s.sendall(json.dumps(req).encode() + b"\n")
        msg, fds, _, _ = socket.recv_fds(s, 65536, 4)
        buf = bytearray(msg)
        return _readline(s, buf), list(fds)
    except OSError as e:
        raise ShimError(f"shim at {sock_path}: {e}") from None
    finally:
        s.close()


class ExecProcess:
    """A process started by `exec` in a container; its stdio are the fds the caller passed.

    Kept separate from exec_sync so a streaming CRI Exec (stdin, tty, attach over
    a websocket) can hand its own fds to the shim and just wait here.
    """

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock, self.pid, self._buf = sock, pid, bytearray()
        self.exit_code: int | None = None
        self.timed_out = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def wait(self, timeout: float | None = None) -> int:
        if self.exit_code is None:
            self.sock.settimeout(timeout)
            reply = _readline(self.sock, self._buf)
            self.sock.close()
            self.exit_code = int(reply["exit_code"])
            self.timed_out = bool(reply.get("timed_out"))
        return self.exit_code


def start_exec(sock_path: str, container_id: str, process: dict, stdio: tuple[int, int, int],
               timeout: float) -> ExecProcess:
    s = _connect(sock_path, 30.0)
    try:
        data = json.dumps({"op": "exec", "id": container_id, "process": process, "timeout": timeout}).encode()
        s.sendmsg([data + b"\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", stdio))])
        buf = bytearray()
        reply = _readline(s, buf)
    except BaseException:
        s.close()
        raise
    if "error" in reply:
        s.close()
        raise ShimError(reply["error"]) if not reply.get("start_error") else ExecStartError(reply["error"])
    p = ExecProcess(s, int(reply["pid"]))
    p._buf = buf
    return p


class ExecStartError(ShimError):
    """The command could not be executed (not found, not executable…)."""


def _abandoned(reply: dict) -> None:
    """A shim came up after its launcher gave up (timeout): nobody will record or stop it, so
    it goes now, infra first, rather than run a pod no one knows of."""
    for key in ("infra_pid", "pid"):
        pid = reply.get(key)
        if isinstance(pid, int) and pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class _PendingLaunch:
    __slots__ = ("zygote", "done", "reply")

    def __init__(self, zygote: subprocess.Popen[bytes]) -> None:
        self.zygote = zygote
        self.done = threading.Event()
        self.reply: dict = {}


class ShimLauncher:
    """Starts shims by asking a zygote (see cri.shim.server.main) to fork them.

    The zygote is our child, reading configs from a pipe: it dies with us (EOF),
    while the shims it forked are already detached and keep their pods running.

    Launches overlap: each request carries a number, the shim echoes it in its
    ready line, and one reader thread per zygote hands every line to the caller
    waiting for that number. Holding a lock across a shim's start-up (namespaces,
    infra fork, socket) would make 30 concurrent RunPodSandbox calls queue behind
    each other; only the write of the request line is serialised.
    """

    def __init__(self, log_path: str, prewarm: bool = True, python: str | None = None) -> None:
        self.log_path = log_path
        self.python = python or sys.executable
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, _PendingLaunch] = {}
        self._closed = False
        self._next_req = 0
        if prewarm:
            with self._lock:
                self._zygote = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as log:
            z = subprocess.Popen(
                [self.python, "-S", "-E", SHIM_MAIN],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, close_fds=True, cwd="/",
            )
        threading.Thread(target=self._read_replies, args=(z,), name="shim-zygote-replies", daemon=True).start()
        return z

    def _read_replies(self, z: subprocess.Popen[bytes]) -> None:
        """Route each ready/error line to its launcher; on EOF fail whoever still waits on this zygote."""
        assert z.stdout is not None
        try:
            with z.stdout:
                for line in z.stdout:  # lines are < PIPE_BUF, so shims' writes never interleave
                    try:
                        reply = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(reply, dict):
                        continue
                    with self._lock:
                        waiter = self._pending.pop(reply.pop("req", -1), None)
                    if waiter is not None:
                        waiter.reply = reply
                        waiter.done.set()
                    else:
                        _abandoned(reply)
        finally:
            self._fail_pending(z)

    def _fail_pending(self, z: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._zygote is z:
                self._zygote = None
            gone = [(n, w) for n, w in self._pending.items() if w.zygote is z]
            for n, _w in gone:
                del self._pending[n]
        for _, w in gone:
            w.reply = {"error": f"the shim zygote exited during start-up (see {self.log_path})"}
            w.done.set()

    def launch(self, cfg: dict, timeout: float = 30.0) -> dict:
        """Hand `cfg` to a new shim; returns its ready message ({"pid", "infra_pid"}) or raises ShimError."""
        with self._lock:
            if self._closed:
                raise ShimError("the runtime is shutting down")
            if self._zygote is None or self._zygote.poll() is not None:
                self._zygote = self._spawn()
            z = self._zygote
            assert z.stdin is not None
            self._next_req += 1
            req = self._next_req
            waiter = self._pending[req] = _PendingLaunch(z)
            try:
                z.stdin.write(json.dumps({**cfg, "req": req}).encode() + b"\n")
                z.stdin.flush()
            except (BrokenPipeError, ValueError):
                del self._pending[req]
                self._zygote = None
                raise ShimError(f"the shim zygote died (see {self.log_path})") from None
        if not waiter.done.wait(timeout):
            with self._lock:
                gave_up = self._pending.pop(req, None) is not None
            if gave_up:  # a reply that comes later finds nobody waiting: the reader kills that shim
                raise ShimError("shim did not start in time")
            waiter.done.wait()  # the reply raced our timeout: it is being handed over right now
        reply = waiter.reply
        reply = waiter.reply
        if "error" in reply:
            raise ShimError(reply["error"])
        return reply

    def close(self) -> None:
        with self._lock:
            self._closed = True
            z, self._zygote = self._zygote, None
        if z is not None:
            if z.stdin is not None:
                z.stdin.close()  # EOF: the zygote exits by itself; its reader thread closes stdout
            try:
                z.wait(timeout=5)
            except subprocess.TimeoutExpired:
                z.kill()
                z.wait()
