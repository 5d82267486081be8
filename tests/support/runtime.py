"""A `kubeletpy runtime` CRI daemon on private dirs under one base dir, and waiting until a CRI
server (ours or containerd) answers on its unix socket."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc

from kubeletpy.cli.crictl import CRIClient

RUNTIME = (sys.executable, "-m", "kubeletpy", "runtime")


def runtime_dirs(base: Path) -> dict[str, Path]:
    """Where a private runtime under `base` keeps state, run files, logs and its CNI conf/cache/IPAM."""
    return {"root": base / "state", "run_root": base / "run", "log_root": base / "logs", "conf": base / "net.d",
            "cache": base / "cni-cache", "ipam": base / "ipam"}


def runtime_argv(base: Path, socket: Path, cgroup_parent: str, *extra: str) -> list[str]:
    """`kubeletpy runtime` serving on `socket`, with the dirs of `runtime_dirs(base)` and its pods'
    cgroups under `cgroup_parent` (unique per caller: other runtimes may run on this host)."""
    d = runtime_dirs(base)
    return [*RUNTIME, "--socket", f"unix://{socket}", "--root", str(d["root"]), "--run-root", str(d["run_root"]),
            "--log-root", str(d["log_root"]), "--cni-conf-dir", str(d["conf"]), "--cni-cache-dir", str(d["cache"]),
            "--cgroup-parent", cgroup_parent, *extra]


def wait_cri(proc: subprocess.Popen[bytes], socket: Path, log: Path, *, timeout: float = 30.0,
             client_timeout: float = 60.0, what: str = "daemon") -> CRIClient:
    """A client of the CRI server `proc` starts on `socket`, once it answers Version. RuntimeError
    with the end of `log` if `proc` exits first or `timeout` passes (the caller stops `proc`)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text()[-3000:]}")
        if socket.exists():
            c = CRIClient(f"unix://{socket}", timeout=client_timeout)
            try:
                c.version()
                return c
            except grpc.RpcError:
                c.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.05)
