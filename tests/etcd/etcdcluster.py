"""A real etcd cluster on 127.0.0.1 for tests and the bench: N members of Debian's
/usr/bin/etcd, free ports, tmp data dirs, and `kill(i)` / `restart(i)` to break it."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class EtcdCluster:
    def __init__(self, root: Path, members: int = 3) -> None:
        self.root = root
        self.n = members
        ports = free_ports(2 * members)
        self.client_ports = ports[:members]
        self.peer_ports = ports[members:]
        self.procs: list[subprocess.Popen | None] = [None] * members
        self.initial = ",".join(f"m{i}=http://127.0.0.1:{self.peer_ports[i]}" for i in range(members))

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    def _start(self, i: int, state: str) -> None:
        log = open(self.root / f"m{i}.log", "a")  # noqa: SIM115 -- the child owns it
        self.procs[i] = subprocess.Popen([
            ETCD, "--name", f"m{i}", "--data-dir", str(self.root / f"m{i}"),
            "--listen-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", self.initial, "--initial-cluster-token", f"kubeletpy-{self.root.name}",
            "--initial-cluster-state", state, "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-level", "warn"], stdout=log, stderr=log)
        log.close()

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for i in range(self.n):
            self._start(i, "new")
        self.wait_healthy(timeout)
        return self

    def healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.client_ports[i]}/health", timeout=1) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        want = members if members is not None else [i for i in range(self.n) if self.procs[i] is not None]
        while time.monotonic() < deadline:
            if all(self.healthy(i) for i in want):
                return
            time.sleep(0.1)
        logs = "\n".join((self.root / f"m{i}.log").read_text()[-2000:] for i in range(self.n))
        raise RuntimeError(f"etcd cluster not healthy after {timeout}s:\n{logs}")

    def leader(self) -> int | None:
        for i in range(self.n):
            if self.procs[i] is None:
                continue
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{self.client_ports[i]}/v3/maintenance/status",
                                             data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1) as r:
                    st = json.loads(r.read())
                if st.get("leader") and st.get("leader") == st.get("header", {}).get("member_id"):
                    return i
            except OSError:
                continue
        return None

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.kill()
            p.wait()
            self.procs[i] = None

    def pause(self, i: int) -> None:
        """SIGSTOP: the member hangs with its connections open (what a stuck or cut-off member looks like)."""
        p = self.procs[i]
        if p is not None:
            p.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.send_signal(signal.SIGCONT)

    def restart(self, i: int) -> None:
        self._start(i, "existing")

    def stop(self) -> None:
        for i in range(self.n):
            p = self.procs[i]
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for i in range(self.n):
            p = self.procs[i]
            if p is not None:
                try:
                    p.wait(2)  # a member that lost a peer may linger trying to hand over leadership
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.procs[i] = None
