"""CRI log format and rotation, graceful stop with the stop signal, exec semantics."""

from __future__ import annotations

import os
import re
import time

from cri.runtime import ContainerState, Runtime

from .conftest import log_lines, run, wait_exit

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def test_cri_log_format_partial_lines_and_reopen(rt: Runtime, pod) -> None:
    sid = pod()
    cid = run(rt, sid, "logger", ["sh", "-c", "echo out1; echo err1 >&2; printf 'no-newline'; "
                                              "head -c 20000 /dev/zero | tr '\\0' x; echo; "
                                              "read _ < /dev/shm/go 2>/dev/null; "
                                              "while [ ! -e /dev/shm/go ]; do sleep 0.05; done; echo after"])
    path = rt.container_status(cid).log_path
    assert path.endswith("/logger/0.log") and "test_" in path
    deadline = time.monotonic() + 5
    while len(open(path).readlines()) < 4:
        assert time.monotonic() < deadline, (open(path).read()[:300], rt.container_status(cid))
        time.sleep(0.02)
    lines = log_lines(path)
    assert all(TS.match(ts) for ts, *_ in lines)
    assert ("stdout", "F", "out1") in [x[1:] for x in lines] and ("stderr", "F", "err1") in [x[1:] for x in lines]
    partial = [x for x in lines if x[2] == "P"]
    assert partial and partial[0][3].startswith("no-newline")  # a 16 KiB chunk without newline
    # rotation: move the file away, ask for a reopen, later output lands in a new file
    os.rename(path, path + ".1")
    rt.reopen_container_log(cid)
    rt.exec_sync(cid, ["touch", "/dev/shm/go"], timeout=5)
    wait_exit(rt, cid)
    assert [x[1:] for x in log_lines(path)] == [("stdout", "F", "after")]


def test_stop_uses_grace_then_kill_and_keeps_status(rt: Runtime, pod) -> None:
    sid = pod()
    polite = run(rt, sid, "polite", ["sh", "-c", "trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done"])
    stubborn = run(rt, sid, "stubborn", ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
    time.sleep(0.2)
    t = time.monotonic()
    rt.stop_container(polite, timeout=10)
    assert time.monotonic() - t < 3
    st = rt.container_status(polite)
    assert st.state == ContainerState.CONTAINER_EXITED and st.exit_code == 3 and st.reason == "Error"
    assert st.finished_at >= st.started_at > st.created_at
    t = time.monotonic()
    rt.stop_container(stubborn, timeout=0.5)
    assert 0.4 < time.monotonic() - t < 5
    assert rt.container_status(stubborn).exit_code == 137
    rt.stop_container(stubborn, timeout=1)  # stopping a stopped container is fine
    done = run(rt, sid, "done", ["true"])
    st = wait_exit(rt, done)
    assert st.exit_code == 0 and st.reason == "Completed"


def test_exec_sync_output_exit_code_timeout(rt: Runtime, pod) -> None:
    sid = pod()
    cid = run(rt, sid, "target", ["sleep", "300"])
    r = rt.exec_sync(cid, ["sh", "-c", "echo out; echo err >&2; exit 5"], timeout=5)
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out) == (b"out\n", b"err\n", 5, False)
    t = time.monotonic()
    r = rt.exec_sync(cid, ["sleep", "30"], timeout=0.3)
    assert r.timed_out and r.exit_code == 137 and time.monotonic() - t < 3
    # an exec'd process lives in the container's cgroup and namespaces
    ctr_pid = rt.container_status(cid).pid
    r = rt.exec_sync(cid, ["cat", "/proc/self/cgroup"], timeout=5)
    with open(f"/proc/{ctr_pid}/cgroup") as f:
        want = {line for line in f.read().splitlines() if ":memory:" in line or ":pids:" in line}
    assert want <= set(r.stdout.decode().splitlines())
    big = rt.exec_sync(cid, ["head", "-c", "300000", "/dev/zero"], timeout=5)
    assert len(big.stdout) == 300000
    r = rt.exec_sync(cid, ["nosuch"], timeout=5)
    assert r.exit_code == 127 and b"not found" in r.stderr


def test_exec_with_caller_fds_and_a_pty(rt: Runtime, pod) -> None:
    """The streaming-exec building block: the caller's fds (here a pty) become the process's stdio."""
    sid = pod()
    cid = run(rt, sid, "tty", ["sleep", "300"])
    master, slave = os.openpty()
    try:
        p = rt.exec(cid, ["sh", "-c", "test -t 0 && echo is-a-tty; read line; echo got:$line"],
                    (slave, slave, slave), timeout=10)
        os.close(slave)
        slave = -1
        os.write(master, b"hello\n")
        assert p.wait(10) == 0
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            out += chunk
        assert b"is-a-tty" in out and b"got:hello" in out, out
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_log_lines_split_the_same_however_bytes_arrive() -> None:
    from cri.shim.server import MAX_LINE, LogStream

    class Sink:
        out = b""

        def write_log(self, data: bytes) -> None:
            self.out += data

    for chunks in ([b"a" * 20000 + b"\nb\n"], [b"a" * 10, b"a" * 19990, b"\n", b"b\n"]):
        sink = Sink()
        stream = LogStream(sink, b"stdout", -1)  # type: ignore[arg-type]
        for c in chunks:
            stream.feed(c)
        recs = [line.split(b" ", 3)[1:] for line in sink.out.splitlines()]
        assert [(s, t, len(m)) for s, t, m in recs] == [(b"stdout", b"P", MAX_LINE),
                                                        (b"stdout", b"F", 20000 - MAX_LINE),
                                                        (b"stdout", b"F", 1)]


def test_container_stdin_and_tty_attach(rt: Runtime, pod) -> None:
    sid = pod()
    # stdin pipe, stdin_once: the first attach owns the only write end; closing it is EOF
    piped = run(rt, sid, "piped", ["sh", "-c", "while read l; do echo got:$l; done; echo eof"],
                stdin=True, stdin_once=True)
    fd, tty = rt.attach_stdin(piped)
    assert not tty
    os.write(fd, b"one\ntwo\n")
    os.close(fd)
    st = wait_exit(rt, piped)
    assert st.exit_code == 0
    assert [x[3] for x in log_lines(st.log_path)] == ["got:one", "got:two", "eof"]

    # a tty: one output stream (stdout), a controlling terminal, resizable
    term = run(rt, sid, "term", ["sh", "-c", "test -t 0 && echo is-a-tty; read l; stty size; echo got:$l"],
               stdin=True, tty=True)
    rt.resize_container_tty(term, 40, 100)
    fd, tty = rt.attach_stdin(term)
    assert tty
    os.write(fd, b"hi\n")
    os.close(fd)
    st = wait_exit(rt, term)
    out = [x[3].rstrip("\r") for x in log_lines(st.log_path)]
    assert "is-a-tty" in out and "40 100" in out and "got:hi" in out, out
    assert all(x[1] == "stdout" for x in log_lines(st.log_path))

    import pytest

    from cri.runtime import FailedPrecondition
    plain = run(rt, sid, "plain", ["sleep", "300"])
    with pytest.raises(FailedPrecondition, match="not created with stdin"):
        rt.attach_stdin(plain)
    with pytest.raises(FailedPrecondition, match="no tty"):
        rt.resize_container_tty(plain, 10, 10)
