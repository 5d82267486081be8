"""A real `kubeletpy control-plane` subprocess: `--listen 127.0.0.1:0` (a free port), a data dir
and admin kubeconfig under a tmp root, started and waited for until it serves; and what the
admin kubeconfig it writes holds (URL, token, CA) for HTTPS clients."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import requests
import yaml

from . import REPO
from .process import spawn, stop_process

CONTROL_PLANE = (sys.executable, "-m", "kubeletpy", "control-plane")


@dataclass(frozen=True)
class Admin:
    """The admin kubeconfig's server URL and token, and the file its CA was written to."""

    server: str
    token: str
    ca: Path


def read_admin(kubeconfig: Path, ca: Path) -> Admin:
    """Read an admin kubeconfig the control plane wrote; its CA goes to `ca` (for `verify=` / `cafile=`)."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return Admin(server=cluster["server"], token=cfg["users"][0]["user"]["token"], ca=ca)


def https_session(ca: Path, token: str | None = None) -> requests.Session:
    """A requests session that verifies the server against `ca` and sends `token` as a bearer token."""
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override `verify`
    s.verify = str(ca)
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


class ControlPlaneProcess:
    """One `command --listen LISTEN --data-dir ROOT/data --kubeconfig ROOT/admin.kubeconfig *args`
    process, its output in ROOT/server.log. `start()` returns once it prints `serving on URL` and
    reads the admin kubeconfig (`url`, `token`, CA in ROOT/ca.crt); `restart()` keeps the data dir."""

    def __init__(self, root: Path, args: Sequence[str] = (), *, command: Sequence[str] = CONTROL_PLANE,
                 listen: str = "127.0.0.1:0", cwd: Path = REPO) -> None:
        self.root = root
        self.args = list(args)
        self.command = list(command)
        self.listen = listen
        self.cwd = cwd
        self.data = root / "data"
        self.kubeconfig = root / "admin.kubeconfig"
        self.log = root / "server.log"
        self.ca = root / "ca.crt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""

    def start(self, timeout: float = 30.0) -> Self:
        """Start it and wait until it serves; if it exits or does not serve within `timeout`, it is
        killed and RuntimeError carries its log."""
        self.proc = spawn([*self.command, "--listen", self.listen, "--data-dir", str(self.data),
                           "--kubeconfig", str(self.kubeconfig), *self.args], self.log, cwd=self.cwd, append=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(r"serving on https://\S+", self.log.read_text()):
                return self.connect()
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError("control plane exited:\n" + self.log.read_text())
            time.sleep(0.05)
        stop_process(self.proc, signal.SIGKILL)
        self.proc = None
        raise RuntimeError("control plane did not start:\n" + self.log.read_text())

    def connect(self) -> Self:
        """Read the admin kubeconfig into `url` and `token` (also for a server started in-process);
        the URL there is the one the server printed."""
        admin = read_admin(self.kubeconfig, self.ca)
        self.url, self.token = admin.server, admin.token
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def session(self, token: str | None = "admin") -> requests.Session:
        """An HTTPS session as the admin (`"admin"`), with another bearer token, or with none (`None`)."""
        return https_session(self.ca, self.token if token == "admin" else token)
