"""The per-pod shim: parent of every container process of one pod sandbox.

Why a shim: the runtime (a big, multi-threaded gRPC process) can crash or be
upgraded without touching running containers. The shim is single-threaded and
imports only the stdlib, so at 50 pods it costs little memory and forking it
is safe and fast; it is therefore also the fork server that creates container
and exec processes (fork → setns/unshare → pivot_root → execve).

Jobs: hold the pod's namespaces through the infra ("pause") child, reap
children and record exit status on disk (exit.json, read by any runtime
instance later), turn container stdout/stderr into CRI-format log files, kill
on request, run exec processes with a deadline.

Protocol: unix stream socket at <run>/shims/<sandbox>.sock, one JSON request
per connection (file descriptors may ride along with SCM_RIGHTS), one JSON
reply line; `exec` and `wait` reply when the process exits.
"""

from __future__ import annotations

import _signal  # pthread_sigmask without signal's int→Signals conversion of the old mask (~60 µs a call)
import _socket
import array
import errno
import json
import os
import select
import signal
import sys
import time

from cri.shim import linux as L
from cri.shim import spawn

_ALL_SIGNALS = signal.valid_signals()
MAX_LINE = 16 * 1024  # a longer line is split into P(artial) records, like containerd
# After a container start, the next warm child is forked this much later: right after our
# reply the fork (a page-table copy of this process) would compete for the CPU with the
# caller reading that reply and with the new container, on the latency everyone measures.
WARM_DELAY = 0.003
# How the runtime's json.dumps({"op": …, "spec": …}) begins: the rest is the same for both (staged_spawn).
_PREPARE_PREFIX = b'{"op": "prepare", "spec": '
_SPAWN_PREFIX = b'{"op": "spawn", "spec": '


def now_ns() -> int:
    return time.time_ns()


def rfc3339nano(ns: int) -> bytes:
    s, frac = divmod(ns, 1_000_000_000)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z").encode()


def write_json(path: str, obj: dict) -> None:
    """Atomic replace without fsync: it must survive our crash, not the host's (containers don't)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(obj).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


class LogStream:
    """One pipe from the container (stdout or stderr) into the shared CRI log file."""

    def __init__(self, ctr: Container, name: bytes, fd: int) -> None:
        self.ctr, self.name, self.fd, self.buf = ctr, name, fd, b""

    def feed(self, data: bytes) -> None:
        parts = (self.buf + data).split(b"\n")  # linear, even for 64 KiB of short lines
        self.buf = parts.pop()
        out = []
        ts = rfc3339nano(now_ns())
        name = self.name
        for line in parts:
            while len(line) > MAX_LINE:  # however the bytes arrived, a long line is split the same way
                out.append(b"%s %s P %s\n" % (ts, name, line[:MAX_LINE]))
                line = line[MAX_LINE:]
            out.append(b"%s %s F %s\n" % (ts, name, line))
        while len(self.buf) >= MAX_LINE:
            out.append(b"%s %s P %s\n" % (ts, name, self.buf[:MAX_LINE]))
            self.buf = self.buf[MAX_LINE:]
        if out:
            self.ctr.write_log(b"".join(out))

    def close(self) -> None:
        if self.buf:
            self.ctr.write_log(b"%s %s F %s\n" % (rfc3339nano(now_ns()), self.name, self.buf))
            self.buf = b""


class Container:
    def __init__(self, cid: str, spec: dict) -> None:
        self.id, self.spec = cid, spec
        self.state_dir: str = spec["state_dir"]
        self.log_path: str = spec.get("log_path") or ""
        self.log_fd = -1
        self.pid = 0
        self.exited = False
        self.streams: list[LogStream] = []
        self.waiters: list[object] = []
        self.start_error = ""
        self.stdin_w = -1        # write end of the container's stdin (pipe, or a dup of the pty master)
        self.tty_master = -1
        self.open_log()

    def close_stdin(self) -> None:
        if self.stdin_w >= 0:
            os.close(self.stdin_w)
            self.stdin_w = -1

    def open_log(self) -> None:
        if self.log_fd >= 0:
            os.close(self.log_fd)
            self.log_fd = -1
        if self.log_path:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            self.log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write_log(self, data: bytes) -> None:
        if self.log_fd >= 0:
            try:
                os.write(self.log_fd, data)
            except OSError as e:
                sys.stderr.write(f"shim: log write {self.log_path}: {e}\n")

    def oom_killed(self) -> bool:
        path = self.spec.get("oom_file")
        if not path:
            return False
        try:
            with open(path) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill" and int(v) > 0:
                        return True
        except OSError:
            pass
        return False


class Shim:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.sandbox_id: str = cfg["id"]
        self.ep = select.epoll()
        self.handlers: dict[int, object] = {}
        self.containers: dict[str, Container] = {}
        self.by_pid: dict[int, object] = {}
        self.pending: dict[int, tuple] = {}   # error-pipe fd -> (conn, ctr|exec record)
        self.execs: dict[int, dict] = {}      # pid -> exec record
        self.infra_pid = 0
        self.shutting_down = False
        self.own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.pid = os.getpid()
        self.warm: dict | None = None   # {"pid", "sock", "join"}: see spawn.warm_child
        self.warm_due = 0.0             # monotonic time to fork the next warm child (0: not due)
        self.staged: dict[str, dict] = {}  # container id -> {"pid", "sock", "spec"}: see op_prepare

    # ---- setup -------------------------------------------------------------
    def fork(self, pidns: str) -> int:
        """fork() with the child in PID namespace `pidns` ("host", "new" or a /proc/…/ns/pid path).

        setns/unshare(CLONE_NEWPID) only change where *children* go, so the
        shim switches, forks and switches back — in the parent only: the child
        can never return to an ancestor namespace.
        """
        # Signals stay blocked across fork until the child has reset our handlers: a SIGTERM
        # meant for a starting container must not run the shim's own handler in the child.
        _signal.pthread_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
        try:
            return self._fork(pidns)
        finally:
            if os.getpid() == self.pid:
                _signal.pthread_sigmask(signal.SIG_UNBLOCK, _ALL_SIGNALS)

    def _fork(self, pidns: str) -> int:
        if pidns == "host":
            return os.fork()
        if pidns == "new":
            L.unshare(L.CLONE_NEWPID)
        else:
            fd = os.open(pidns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                L.setns(fd, L.CLONE_NEWPID)
            finally:
                os.close(fd)
        try:
            pid = os.fork()
        except BaseException:
            L.setns(self.own_pidns, L.CLONE_NEWPID)
            raise
        if pid != 0:
            L.setns(self.own_pidns, L.CLONE_NEWPID)
        return pid

    def start_infra(self) -> int:
        cfg = self.cfg
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = self.fork("new" if cfg.get("pid_ns") == "pod" else "host")
        if pid == 0:
            _infra_main(cfg, w)
        os.close(w)
        msg = _read_all(r)
        os.close(r)
        if msg:
            os.waitpid(pid, 0)
            raise RuntimeError(json.loads(msg)["error"])
        self.infra_pid = pid
        self.by_pid[pid] = "infra"
        return pid

    def pod_join(self) -> dict[str, str]:
        return {kind: f"/proc/{self.infra_pid}/ns/{kind}" for kind in ("net", "ipc", "uts")
                if self.cfg.get(kind + "_ns", "pod") == "pod"}

    def ensure_warm(self) -> None:
        """Keep one child forked ahead for the common case (own PID ns, pod's net/ipc/uts)."""
        if self.warm is not None or self.shutting_down or not self.infra_pid or not self.cfg.get("warm", True):
            return
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        join = self.pod_join()
        try:
            pid = self.fork("new")
        except OSError:
            a.close()
            b.close()
            return
        if pid == 0:
            spawn.warm_child(b.fileno(), join)
            os._exit(1)
        b.close()
        self.warm = {"pid": pid, "sock": a, "join": join}
        self.by_pid[pid] = "warm"

    def warm_fits(self, spec: dict) -> bool:
        w = self.warm
        return w is not None and spec.get("pid_ns") is None and not spec.get("unshare") \
            and not spec.get("hostname") and set(spec.get("join", {})) == set(w["join"])

    def take_warm(self, spec: dict, fds: list[int], raw: bytes | None = None) -> int:
        """Hand `spec` to the warm child if it fits; its pid, or 0 to fork as usual.

        `raw`: the spawn request's JSON line, which holds the spec; sent instead of
        re-encoding it (the child takes either a spec or a request carrying one)."""
        w = self.warm
        if w is None or not self.warm_fits(spec):
            return 0
        self.warm = None
        data = raw if raw is not None else json.dumps(spec).encode()
        sock = w["sock"]
        try:
            sock.setblocking(True)
            sent = sock.sendmsg([len(data).to_bytes(8, "little") + data],
                                [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
            if sent < len(data) + 8:
                sock.sendall((len(data).to_bytes(8, "little") + data)[sent:])
        except OSError:
            _kill(w["pid"], signal.SIGKILL)
            return 0
        finally:
            sock.close()
        return w["pid"]

    def listen(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
        with_short_path(path, s.bind)
        s.listen(64)
        self.lsock = s
        self.ep.register(s.fileno(), select.EPOLLIN)
        self.handlers[s.fileno()] = self.on_accept

    # ---- event loop ----------------------------------------------------------
    def run(self) -> None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wfd)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, lambda *a: self.begin_shutdown())
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.ep.register(rfd, select.EPOLLIN)
        self.handlers[rfd] = lambda ev: (_drain(rfd), self.reap())
        self.reap()
        while True:
            timeout = self.next_deadline()
            try:
                events = self.ep.poll(timeout)
            except InterruptedError:
                events = []
            for fd, ev in events:
                h = self.handlers.get(fd)
                if h is not None:
                    h(ev)
            self.check_deadlines()
            if self.warm_due and time.monotonic() >= self.warm_due:
                self.warm_due = 0.0
                self.ensure_warm()
            if self.shutting_down and not self.by_pid and not self.streams_open():
                break
        try:
            os.unlink(self.cfg["socket"])
        except OSError:
            pass

    def streams_open(self) -> bool:
        return any(c.streams for c in self.containers.values())

    def next_deadline(self) -> float:
        deadlines = [e["deadline"] for e in self.execs.values() if e.get("deadline")]
        if self.warm_due:
            deadlines.append(self.warm_due)
        if not deadlines:
            return -1 if not self.shutting_down else 0.2
        return max(0.0, min(deadlines) - time.monotonic())

    def check_deadlines(self) -> None:
        t = time.monotonic()
        for pid, e in list(self.execs.items()):
            if e.get("deadline") and t >= e["deadline"] and not e.get("timed_out"):
                e["timed_out"] = True
                _kill(pid, signal.SIGKILL)

    # ---- connections -------------------------------------------------------------
    def on_accept(self, ev: int) -> None:
        while True:
            try:
                fd, _ = self.lsock._accept()
            except BlockingIOError:
                return
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            conn.setblocking(False)
            st = {"conn": conn, "buf": b"", "fds": []}
            self.ep.register(fd, select.EPOLLIN)
            self.handlers[fd] = lambda ev, st=st: self.on_readable(st)

    def on_readable(self, st: dict) -> None:
        conn = st["conn"]
        try:
            data, anc, _, _ = conn.recvmsg(65536, _socket.CMSG_SPACE(16 * 4))
        except BlockingIOError:
            return
        except OSError:
            data, anc = b"", []
        for level, typ, cdata in anc:
            if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
                st["fds"].extend(a)
        st["buf"] += data
        if b"\n" not in st["buf"] and data:
            return
        self.ep.unregister(conn.fileno())
        del self.handlers[conn.fileno()]
        if not data and b"\n" not in st["buf"]:
            self.close_conn(conn, st["fds"])
            return
        try:
            line = st["buf"].split(b"\n", 1)[0]
            req = self.staged_spawn(line) or json.loads(line)
            if req.get("op") in ("spawn", "prepare"):
                req["raw"] = line  # forwarded as is to a warm child, which parses it itself
            reply = getattr(self, "op_" + req["op"])(req, conn, st["fds"])
        except Exception as e:  # noqa: BLE001 - reported to the caller, the shim keeps serving
            reply = {"error": f"{type(e).__name__}: {e}"}
        if reply is not None:
            self.reply(conn, reply)
            self.close_conn(conn, st["fds"])

    def reply(self, conn: object, obj: dict, fds: list[int] | None = None) -> None:
        try:
            conn.setblocking(True)  # type: ignore[attr-defined]
            data = json.dumps(obj).encode() + b"\n"
            if fds:
                conn.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,  # type: ignore[attr-defined]
                                       array.array("i", fds).tobytes())])
            else:
                conn.sendall(data)  # type: ignore[attr-defined]
        except OSError:
            pass

    def close_conn(self, conn: object, fds: list[int]) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        conn.close()  # type: ignore[attr-defined]

    # ---- operations ----------------------------------------------------------------
    def op_ping(self, req: dict, conn: object, fds: list[int]) -> dict:
        return {"pid": os.getpid(), "infra_pid": self.infra_pid}

    def op_state(self, req: dict, conn: object, fds: list[int]) -> dict:
        return {"pid": os.getpid(), "infra_pid": self.infra_pid,
                "containers": {c.id: {"pid": c.pid, "exited": c.exited} for c in self.containers.values()}}

    def op_spawn(self, req: dict, conn: object, fds: list[int]) -> dict | None:
        spec = req["spec"]
        cid = spec["id"]
        old = self.containers.get(cid)
        if old is not None and not old.exited:
            return {"error": f"container {cid} is already running"}
        ctr = Container(cid, spec)
        # stdio: a pty (tty: true; one stream, CRI logs it as stdout) or pipes; stdin is a pipe
        # whose write end we keep for `attach`, or /dev/null.
        mine: list[int] = []      # our ends: output to read, stdin to hand out
        theirs: list[int] = []    # the child's ends, closed here after fork
        if spec.get("tty"):
            master, slave = os.openpty()
            os.set_inheritable(master, False)
            os.set_inheritable(slave, False)
            stdio = (slave, slave, slave)
            outputs = [(b"stdout", master)]
            mine.append(master)
            theirs.append(slave)
            if spec.get("stdin"):
                ctr.stdin_w = os.dup(master)
                os.set_inheritable(ctr.stdin_w, False)
            ctr.tty_master = master
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            if spec.get("stdin"):
                in_r, ctr.stdin_w = os.pipe2(os.O_CLOEXEC)
            else:
                in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            stdio = (in_r, out_w, err_w)
            outputs = [(b"stdout", out_r), (b"stderr", err_r)]
            mine += [out_r, err_r]
            theirs += [in_r, out_w, err_w]
        er, ew = os.pipe2(os.O_CLOEXEC)
        pid = self.go_staged(spec, [*stdio, ew]) or self.take_warm(spec, [*stdio, ew], req.get("raw"))
        if pid:
            self.by_pid.pop(pid, None)
        else:
            try:
                # None: a new PID namespace, "host": ours, else the path of one to join
                pid = self.fork(spec.get("pid_ns") or "new")
            except BaseException:
                for fd in (*mine, *theirs, er, ew):
                    os.close(fd)
                ctr.close_stdin()
                raise
            if pid == 0:
                spawn.run_container(spec, stdio, ew)
                os._exit(127)
        started = now_ns()
        self.containers[cid] = ctr
        for fd in (*theirs, ew):
            os.close(fd)
        ctr.pid = pid
        self.by_pid[pid] = ctr
        for name, fd in outputs:
            s = LogStream(ctr, name, fd)
            ctr.streams.append(s)
            os.set_blocking(fd, False)
            self.ep.register(fd, select.EPOLLIN)
            self.handlers[fd] = lambda ev, s=s: self.on_output(s)
        write_json(ctr.state_dir + "/process.json", {"pid": pid, "started_at": started,
                                                       "start_time": L.start_time(pid)})
        rec = {"conn": conn, "ctr": ctr, "buf": b""}
        self.pending[er] = rec
        self.ep.register(er, select.EPOLLIN)
        self.handlers[er] = lambda ev: self.on_errpipe(er)
        return None

    def on_errpipe(self, fd: int) -> None:
        rec = self.pending.get(fd)
        if rec is None:
            return
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            rec["buf"] += data
            return
        self.finish_pending(fd)

    def finish_pending(self, fd: int) -> None:
        rec = self.pending.pop(fd)
        self.ep.unregister(fd)
        del self.handlers[fd]
        if not rec["buf"]:
            rec["buf"] = b""
        os.close(fd)
        err = json.loads(rec["buf"])["error"] if rec["buf"] else ""
        if "ctr" in rec:
            ctr = rec["ctr"]
            ctr.start_error = err
            if err and self.by_pid.pop(ctr.pid, None) is not None:
                # The child exits right after reporting; reap it now so exit.json
                # exists before the caller hears about the failure.
                os.waitpid(ctr.pid, 0)
                self.container_exited(ctr, 128, 0)
            reply = {"error": err, "start_error": True} if err else {"pid": ctr.pid}
            self.reply(rec["conn"], reply)
            self.close_conn(rec["conn"], [])
            if self.warm is None:  # off the critical path, see WARM_DELAY
                due = time.monotonic() + WARM_DELAY
                self.warm_due = min(self.warm_due, due) if self.warm_due else due
            return
        else:
            e = rec["exec"]
            e["start_error"] = err
            reply = {"error": err, "start_error": True} if err else {"pid": e["pid"]}
            if not err:
                e["conn"] = rec["conn"]
                self.reply(rec["conn"], reply)
                return
        self.reply(rec["conn"], reply)
        self.close_conn(rec["conn"], [])

    def on_output(self, s: LogStream) -> None:
        try:
            data = os.read(s.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            s.feed(data)
            return
        self.ep.unregister(s.fd)
        del self.handlers[s.fd]
        os.close(s.fd)
        if s.fd == s.ctr.tty_master:
            s.ctr.tty_master = -1
        s.close()
        s.ctr.streams.remove(s)

    def drain_streams(self, ctr: Container) -> None:
        for s in list(ctr.streams):
            while True:
                try:
                    data = os.read(s.fd, 65536)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                s.feed(data)

    def op_exec(self, req: dict, conn: object, fds: list[int]) -> dict | None:
        ctr = self.containers.get(req["id"])
        if ctr is None or ctr.exited or not ctr.pid:
            return {"error": f"container {req['id']} is not running"}
        if len(fds) != 3:
            return {"error": "exec needs three file descriptors (stdin, stdout, stderr)"}
        spec = dict(ctr.spec)
        proc = dict(spec["process"])
        proc.update(req.get("process", {}))
        spec["process"] = proc
        er, ew = os.pipe2(os.O_CLOEXEC)
        try:
            pid = self.fork(f"/proc/{ctr.pid}/ns/pid")
        except BaseException:
            os.close(er)
            os.close(ew)
            raise
        if pid == 0:
            spawn.run_exec(spec, ctr.pid, (fds[0], fds[1], fds[2]), ew)
            os._exit(127)
        os.close(ew)
        for fd in fds:
            os.close(fd)
        fds.clear()
        timeout = req.get("timeout") or 0
        e = {"pid": pid, "deadline": time.monotonic() + timeout if timeout > 0 else 0, "conn": None}
        self.execs[pid] = e
        self.by_pid[pid] = e
        self.pending[er] = {"conn": conn, "exec": e, "buf": b""}
        self.ep.register(er, select.EPOLLIN)
        self.handlers[er] = lambda ev: self.on_errpipe(er)
        return None

    def op_wait(self, req: dict, conn: object, fds: list[int]) -> dict | None:
        ctr = self.containers.get(req["id"])
        if ctr is None or ctr.exited or not ctr.pid:
            return {"exited": True}
        ctr.waiters.append(conn)
        return None

    def op_kill(self, req: dict, conn: object, fds: list[int]) -> dict:
        ctr = self.containers.get(req["id"])
        if ctr is None or ctr.exited or not ctr.pid:
            return {"exited": True}
        sig = int(req.get("signal", signal.SIGKILL))
        _kill(ctr.pid, sig)
        if req.get("all"):
            for pid in _cgroup_pids(ctr.spec.get("cgroup_procs", [])):
                _kill(pid, sig)
        return {"ok": True}

    def op_attach(self, req: dict, conn: object, fds: list[int]) -> dict | None:
        """Hand the caller the container's stdin: a dup, or with `once` (CRI stdin_once) our only
        copy, so the container sees EOF when that caller closes it."""
        ctr = self.containers.get(req["id"])
        if ctr is None or ctr.exited or not ctr.pid:
            return {"error": f"container {req['id']} is not running"}
        if ctr.stdin_w < 0:
            return {"error": f"container {req['id']} has no stdin (created without stdin, "
                             "or a stdin_once attach already took it)"}
        if req.get("once"):
            fd, ctr.stdin_w = ctr.stdin_w, -1
        else:
            fd = os.dup(ctr.stdin_w)
        self.reply(conn, {"ok": True, "tty": ctr.tty_master >= 0}, [fd])
        os.close(fd)
        self.close_conn(conn, fds)
        return None

    def op_resize(self, req: dict, conn: object, fds: list[int]) -> dict:
        ctr = self.containers.get(req["id"])
        if ctr is None or ctr.tty_master < 0 or ctr.exited:
            return {"error": f"container {req['id']} has no terminal"}
        import fcntl
        import struct
        import termios
        fcntl.ioctl(ctr.tty_master, termios.TIOCSWINSZ, struct.pack("HHHH", int(req["rows"]), int(req["cols"]), 0, 0))
        return {"ok": True}

    def op_reopen_log(self, req: dict, conn: object, fds: list[int]) -> dict:
        ctr = self.containers.get(req["id"])
        if ctr is None:
            return {"error": f"container {req['id']} is unknown to the shim"}
        ctr.open_log()
        return {"ok": True}

    def op_prepare(self, req: dict, conn: object, fds: list[int]) -> dict:
        """Create time: let the warm child build the container (namespaces, cgroups, root, mounts)
        now and wait for `spawn` to hand it stdio and let it execve, as `runc create` / `runc start`
        do. The runtime doesn't wait for this: the child works while the runtime makes its record
        durable and its caller comes back with the start. A setup error is kept by the child and
        reported at start, as it would have been without staging."""
        spec = req["spec"]
        cid = spec["id"]
        if cid in self.staged or cid in self.containers or self.shutting_down:
            return {"ok": True, "staged": False}
        if self.warm is None:
            # Consumed by a start a moment ago and not re-forked yet (WARM_DELAY): nobody waits
            # for this reply, so fork it now rather than leave the start to a cold fork.
            self.warm_due = 0.0
            self.ensure_warm()
        if not self.warm_fits(spec):
            return {"ok": True, "staged": False}
        w, self.warm = self.warm, None
        assert w is not None
        data = req.get("raw") or json.dumps(spec).encode()
        sock = w["sock"]
        try:
            sock.setblocking(True)
            sock.sendall(len(data).to_bytes(8, "little") + data)  # no fds: "stage, then wait"
        except OSError:
            _kill(w["pid"], signal.SIGKILL)
            sock.close()
            return {"ok": True, "staged": False}
        raw = data[len(_PREPARE_PREFIX):] if data.startswith(_PREPARE_PREFIX) else None
        self.staged[cid] = {"pid": w["pid"], "sock": sock, "spec": spec, "raw": raw}
        self.by_pid[w["pid"]] = "staged"
        # the start normally follows at once and re-arms the warm child itself (finish_pending)
        if not self.warm_due:
            self.warm_due = time.monotonic() + 0.05
        return {"ok": True, "staged": True}

    def staged_spawn(self, line: bytes) -> dict | None:
        """The spawn request of a staged container, without parsing it again: the runtime sends
        the spec it prepared with, read back from its record, which encodes to the same bytes."""
        if not self.staged or not line.startswith(_SPAWN_PREFIX):
            return None
        body = line[len(_SPAWN_PREFIX):]
        for st in self.staged.values():
            if st["raw"] == body:
                return {"op": "spawn", "spec": st["spec"]}
        return None

    def go_staged(self, spec: dict, fds: list[int]) -> int:
        """Start the child staged for this spec: its pid, or 0 (none, or staged for another spec)."""
        st = self.staged.pop(spec["id"], None)
        if st is None:
            return 0
        sock = st["sock"]
        try:
            if st["spec"] is not spec and st["spec"] != spec:
                raise OSError("the spec changed since the container was prepared")
            sock.sendmsg([b"g"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
        except OSError:
            _kill(st["pid"], signal.SIGKILL)  # reaped as "staged"
            return 0
        finally:
            sock.close()
        return st["pid"]

    def drop_staged(self, cid: str) -> None:
        """Kill a staged child and reap it now, so the container's cgroup is empty on return."""
        st = self.staged.pop(cid, None)
        if st is None:
            return
        st["sock"].close()
        if self.by_pid.pop(st["pid"], None) is not None:
            _kill(st["pid"], signal.SIGKILL)
            try:
                os.waitpid(st["pid"], 0)
            except ChildProcessError:
                pass

    def op_forget(self, req: dict, conn: object, fds: list[int]) -> dict:
        self.drop_staged(req["id"])
        ctr = self.containers.get(req["id"])
        if ctr is not None and ctr.exited:
            del self.containers[req["id"]]
            if ctr.log_fd >= 0:
                os.close(ctr.log_fd)
        return {"ok": True}

    def op_shutdown(self, req: dict, conn: object, fds: list[int]) -> dict:
        self.begin_shutdown()
        return {"ok": True}

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        for c in self.containers.values():
            if not c.exited and c.pid:
                _kill(c.pid, signal.SIGKILL)
                for pid in _cgroup_pids(c.spec.get("cgroup_procs", [])):
                    _kill(pid, signal.SIGKILL)
        for pid in self.execs:
            _kill(pid, signal.SIGKILL)
        if self.warm is not None:
            _kill(self.warm["pid"], signal.SIGKILL)
        for st in self.staged.values():
            _kill(st["pid"], signal.SIGKILL)
        if self.infra_pid:
            _kill(self.infra_pid, signal.SIGKILL)

    # ---- children ------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            owner = self.by_pid.pop(pid, None)
            if owner == "warm":
                if self.warm is not None and self.warm["pid"] == pid:
                    self.warm["sock"].close()
                    self.warm = None
                continue
            if owner == "staged":
                for cid, st in list(self.staged.items()):
                    if st["pid"] == pid:
                        st["sock"].close()
                        del self.staged[cid]
                continue
            if owner is None or owner == "infra":
                continue
            code = os.waitstatus_to_exitcode(status)
            exit_code = code if code >= 0 else 128 - code
            if isinstance(owner, Container):
                self.container_exited(owner, exit_code, -code if code < 0 else 0)
            else:
                self.exec_exited(pid, owner, exit_code)

    def container_exited(self, ctr: Container, exit_code: int, sig: int) -> None:
        finished = now_ns()
        for fd, rec in list(self.pending.items()):
            if rec.get("ctr") is ctr:
                rec["buf"] += _read_all(fd)
                self.finish_pending(fd)
        self.drain_streams(ctr)
        oom = ctr.oom_killed()
        if ctr.start_error:
            reason, message, exit_code = "StartError", ctr.start_error, 128
        elif oom:
            reason, message = "OOMKilled", ""
        elif exit_code == 0:
            reason, message = "Completed", ""
        else:
            reason, message = "Error", ""
        ctr.exited = True
        ctr.close_stdin()
        write_json(ctr.state_dir + "/exit.json", {"exit_code": exit_code, "finished_at": finished,
                                                    "signal": sig, "reason": reason, "message": message,
                                                    "oom_killed": oom})
        for w in ctr.waiters:
            self.reply(w, {"exited": True, "exit_code": exit_code})
            self.close_conn(w, [])
        ctr.waiters.clear()

    def exec_exited(self, pid: int, e: dict, exit_code: int) -> None:
        self.execs.pop(pid, None)
        for fd, rec in list(self.pending.items()):
            if rec.get("exec") is e:
                rec["buf"] += _read_all(fd)
                self.finish_pending(fd)
        if e.get("start_error"):
            return
        if e.get("conn") is not None:
            self.reply(e["conn"], {"exit_code": exit_code, "timed_out": bool(e.get("timed_out"))})
            self.close_conn(e["conn"], [])


def with_short_path(path: str, fn: object) -> None:
    """bind/connect a unix socket whose path may exceed sun_path's 108 bytes.

    Long run roots (pytest tmp dirs) plus a 64-hex id do; going through
    /proc/self/fd/<dir fd>/<name> keeps the address short and the file where it belongs.
    """
    if len(path.encode()) < 100:
        fn(path)  # type: ignore[operator]
        return
    dfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
    try:
        fn(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")  # type: ignore[operator]
    finally:
        os.close(dfd)


def _infra_main(cfg: dict, w: int) -> None:
    """The pod's "pause": own the namespaces, reap orphans (it is PID 1 with a shared PID ns)."""
    try:
        os.setsid()
        flags = 0
        for kind, flag in (("net", L.CLONE_NEWNET), ("ipc", L.CLONE_NEWIPC), ("uts", L.CLONE_NEWUTS)):
            if cfg.get(kind + "_ns", "pod") == "pod":
                flags |= flag
        if flags:
            L.unshare(flags)
        if flags & L.CLONE_NEWUTS and cfg.get("hostname"):
            L.sethostname(cfg["hostname"])
        if flags & L.CLONE_NEWNET:
            # `lo` up so processes can reach each other over localhost even with no CNI.
            _lo_up()
        spawn.join_cgroups(cfg.get("cgroup_join", []))
        null = os.open("/dev/null", os.O_RDWR)
        for i in range(3):
            os.dup2(null, i)
        os.closerange(3, w)
        os.closerange(w + 1, 65536)
        spawn.reset_signals()
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # the kernel reaps for us
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *a: os._exit(0))
        _signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.close(w)
    except BaseException as e:  # noqa: BLE001
        spawn.fail(w, f"infra: {spawn._describe(e)}", 1)
    while True:
        signal.pause()


def _lo_up() -> None:
    import fcntl
    import struct
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), 0x8913, ifr))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
    finally:
        s.close()




def _cgroup_pids(procs_files: list[str]) -> list[int]:
    for path in procs_files:
        try:
            with open(path) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            continue
    return []


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            break
        if not chunk:
            break
        out += chunk
    return out


def main() -> None:
    """Zygote: a pre-started interpreter that forks one shim per pod on request.

    The runtime writes one config line per pod sandbox to our stdin; we fork,
    the child detaches (second fork, so it is reparented away from us) and
    becomes that pod's shim, replying on our shared stdout. Every shim thus
    shares the zygote's imported-module pages copy-on-write (gc.freeze keeps
    the collector from dirtying them), which is what keeps a pod's shim+infra
    at a few MiB, and creating a sandbox costs a fork instead of an interpreter
    start. When the runtime goes away our stdin hits EOF and we exit; shims
    already forked are not our children anymore and live on.
    """
    import gc
    gc.collect()
    gc.freeze()
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            os._exit(0)
        cfg = json.loads(line)
        pid = os.fork()
        if pid == 0:
            if os.fork() != 0:
                os._exit(0)
            os.setsid()
            _run_shim(cfg)
        os.waitpid(pid, 0)


def _run_shim(cfg: dict) -> None:
    L.prctl(L.PR_SET_CHILD_SUBREAPER, 1)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)  # never hold the zygote's command pipe
    out = sys.stdout.buffer
    shim: Shim | None = None
    try:
        shim = Shim(cfg)
        infra = shim.start_infra()
        shim.listen(cfg["socket"])
        write_json(cfg["state_dir"] + "/shim.json", {"pid": os.getpid(), "infra_pid": infra,
                                                      "start_time": L.start_time(os.getpid()),
                                                      "infra_start_time": L.start_time(infra)})
        out.write(json.dumps({"pid": os.getpid(), "infra_pid": infra, "req": cfg.get("req")}).encode() + b"\n")
        out.flush()
    except BaseException as e:  # noqa: BLE001
        if shim is not None and shim.infra_pid:
            _kill(shim.infra_pid, signal.SIGKILL)  # don't leave an orphaned pause behind
            os.waitpid(shim.infra_pid, 0)
        out.write(json.dumps({"error": spawn._describe(e), "req": cfg.get("req")}).encode() + b"\n")
        out.flush()
        os._exit(1)
    os.dup2(null, 1)  # release the zygote's reply pipe
    os.close(null)
    shim.ensure_warm()
    shim.run()
    os._exit(0)
