"""Subprocesses of the harness: free ports, start with output into a log file, stop by their Popen."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from . import REPO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: Sequence[str], log: Path, *, cwd: Path | None = REPO, append: bool = True) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr into `log` (appended to, or emptied first with `append=False`)."""
    with open(log, "ab" if append else "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send `sig`, wait up to `timeout` seconds, then SIGKILL; the exit status."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
