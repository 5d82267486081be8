"""`kubeletpy up|down|status`: the single-node cluster on this host.

`up` is a tiny supervisor: each component (control plane, runtime, agent) runs as
its own background process with a pid file under the run root and a log under
/var/log/kubeletpy, so killing or restarting one never disturbs the others or the
pods. Running `up` again starts only what is not running. Components whose code
has not landed yet are reported as such instead of being faked.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubeletpy import paths


@dataclass
class Component:
    name: str
    module: str                     # present once the component's code has landed
    argv: list[str]
    port: int | None = None         # TCP port that answers once it is up
    socket_path: Path | None = None  # or a unix socket that appears once it is up
    env: dict[str, str] = field(default_factory=dict)

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


@dataclass
class ClusterLayout:
    run_root: Path
    log_dir: Path
    state_root: Path
    listen_port: int

    def pid_file(self, name: str) -> Path:
        return self.run_root / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def _components(layout: ClusterLayout) -> list[Component]:
    cp_dir = layout.state_root / "controlplane"
    return [
        Component(
            "control-plane",
            "kubeletpy.cli.controlplane",
            ["control-plane", "--listen", f"0.0.0.0:{layout.listen_port}", "--data-dir", str(cp_dir)],
            port=layout.listen_port,
        ),
        Component(
            "runtime",
            "kubeletpy.cli.runtime",
            ["runtime", "--root", str(layout.state_root), "--socket", f"unix://{layout.run_root / 'cri.sock'}"],
            socket_path=layout.run_root / "cri.sock",
        ),
        Component("agent", "kubeletpy.cli.agent", ["agent"]),
    ]


def register(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--root", type=Path, default=paths.STATE_ROOT, help="state root (default %(default)s)")
    parser.add_argument("--run-root", type=Path, default=paths.RUN_ROOT, help="pid files and sockets")
    parser.add_argument("--log-dir", type=Path, default=paths.DAEMON_LOG_ROOT, help="daemon logs")
    parser.add_argument("--port", type=int, default=6443, help="API server port")
    if name == "up":
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each component")
        parser.set_defaults(func=cmd_up)
    elif name == "down":
        parser.add_argument("--purge", action="store_true", help="also delete state and certificates")
        parser.set_defaults(func=cmd_down)
    else:
        parser.set_defaults(func=cmd_status)


def _layout(args: argparse.Namespace) -> ClusterLayout:
    return ClusterLayout(args.run_root, args.log_dir, args.root, args.port)


def running_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is alive and is a kubeletpy process."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if b"kubeletpy" in cmdline else None


def _answers(c: Component) -> bool:
    if c.port is not None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", c.port), timeout=0.5):
            return True
        return False
    if c.socket_path is not None:
        return c.socket_path.exists()
    return True


def _start(c: Component, layout: ClusterLayout) -> int:
    layout.run_root.mkdir(parents=True, exist_ok=True)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    log = open(layout.log_file(c.name), "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeletpy", *c.argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # survives this CLI and its terminal
        env={**os.environ, **c.env},
        close_fds=True,
    )
    log.close()
    layout.pid_file(c.name).write_text(f"{proc.pid}\n")
    return proc.pid


def cmd_up(args: argparse.Namespace) -> int:
    layout = _layout(args)
    failed = False
    for c in _components(layout):
        if not c.available():
            print(f"{c.name:14} not installed yet (its code has not landed) — skipped")
            continue
        pid = running_pid(layout.pid_file(c.name))
        if pid is not None:
            print(f"{c.name:14} already running (pid {pid})")
            continue
        pid = _start(c, layout)
        deadline = time.monotonic() + args.timeout
        while not _answers(c):
            if running_pid(layout.pid_file(c.name)) is None or time.monotonic() > deadline:
                print(f"{c.name:14} FAILED to start; see {layout.log_file(c.name)}", file=sys.stderr)
                failed = True
                break
            time.sleep(0.1)
        else:
            print(f"{c.name:14} started (pid {pid}, log {layout.log_file(c.name)})")
    return 1 if failed else 0


def _stop(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def cmd_down(args: argparse.Namespace) -> int:
    layout = _layout(args)
    # Reverse order: the agent first, so nothing restarts pods while we tear down.
    for c in reversed(_components(layout)):
        pid = running_pid(layout.pid_file(c.name))
        if pid is None:
            print(f"{c.name:14} not running")
        else:
            _stop(pid)
            print(f"{c.name:14} stopped (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            layout.pid_file(c.name).unlink()
    if args.purge:
        import shutil

        for d in (layout.state_root, paths.ETC_ROOT):
            shutil.rmtree(d, ignore_errors=True)
            print(f"purged {d}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    layout = _layout(args)
    all_ok = True
    for c in _components(layout):
        if not c.available():
            print(f"{c.name:14} not installed")
            continue
        pid = running_pid(layout.pid_file(c.name))
        if pid is None:
            print(f"{c.name:14} stopped")
            all_ok = False
        else:
            health = "healthy" if _answers(c) else "not answering"
            print(f"{c.name:14} running (pid {pid}) {health}")
    return 0 if all_ok else 3
