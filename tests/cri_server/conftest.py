"""Fixtures: a real `kubeletpy runtime` daemon on private roots, driven through `kubeletpy crictl`'s client.

Other suites run on this host at the same time, so everything is private to this
session: tmp state/run/log roots and socket, a cgroup parent `kpt-cri-<rand>`, a
CNI conf dir whose conflist uses bridge `kpt<rand>` and a free 10.249.x.0/24, tmp
CNI result cache and IPAM dataDir. The session finalizer removes pods, the bridge,
NAT rules of the subnet, cgroups and dirs, also when tests failed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import REPO
from support.host import clean_host, free_subnet
from support.process import spawn, stop_process
from support.runtime import runtime_argv, runtime_dirs, wait_cri

from cri.api import api_pb2 as pb
from cri.images import ImageStore
from kubeletpy.cli.crictl import CRIClient

BUSYBOX = "kubeletpy.local/busybox:latest"


@dataclass
class Env:
    """Paths and names of one private daemon."""

    base: Path
    cgroup_parent: str
    bridge: str
    subnet: str
    net_name: str
    extra_args: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.base / "run" / "cri.sock"   # in the run root, as /run/kubeletpy/cri.sock is

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def dirs(self) -> dict[str, Path]:
        return runtime_dirs(self.base)

    def write_conflist(self) -> None:
        d = self.dirs()
        d["conf"].mkdir(parents=True, exist_ok=True)
        conf = {"cniVersion": "1.0.0", "name": self.net_name, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "subnet": self.subnet, "dataDir": str(d["ipam"])}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}
        (d["conf"] / "10-test.conflist").write_text(json.dumps(conf))

    def argv(self) -> list[str]:
        return runtime_argv(self.base, self.socket, self.cgroup_parent, "--cni-bin-dir", "/opt/cni/bin:/usr/lib/cni",
                            "--cni-bridge", self.bridge, "--cni-data-dir", str(self.dirs()["ipam"]), *self.extra_args)

    def leases(self) -> list[str]:
        p = self.dirs()["ipam"] / self.net_name
        return sorted(x.name for x in p.iterdir() if x.name[0].isdigit()) if p.exists() else []


class Daemon:
    """One `kubeletpy runtime` process; restartable, with a client bound to its socket."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = env.base / "daemon.log"
        self.client: CRIClient | None = None

    def start(self, timeout: float = 30) -> CRIClient:
        self.proc = spawn(self.env.argv(), self.log)
        self.client = wait_cri(self.proc, self.env.socket, self.log, timeout=timeout)
        return self.client

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is None:
            return 0
        rc = stop_process(self.proc, sig, timeout=20)
        self.proc = None
        return rc

    def restart(self, sig: int = signal.SIGTERM) -> CRIClient:
        self.stop(sig)
        return self.start()


def new_env(base: Path, write_conf: bool = True) -> Env:
    tag = secrets.token_hex(3)
    env = Env(base=base, cgroup_parent=f"kpt-cri-{tag}", bridge=f"kpt{tag}", subnet=free_subnet(),
              net_name=f"kpt-cri-{tag}")
    base.mkdir(parents=True, exist_ok=True)
    if write_conf:
        env.write_conflist()
    else:
        env.dirs()["conf"].mkdir(parents=True, exist_ok=True)
    return env


def cleanup_env(env: Env, client: CRIClient | None) -> None:
    """Remove what a daemon's pods hold on the host; everything is named after this env."""
    if client is not None:
        with contextlib.suppress(grpc.RpcError):
            for p in client.list_pods():
                with contextlib.suppress(grpc.RpcError):
                    client.remove_pod(p.id)
    clean_host(base=env.base, bridge=env.bridge, subnet=env.subnet, cgroup_parent=env.cgroup_parent)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = Path(f"/tmp/kpt-cri-{secrets.token_hex(4)}")  # short: unix socket paths have a 107-byte limit
    e = new_env(base)
    ImageStore(root=e.dirs()["root"]).build_busybox()
    yield e


@pytest.fixture(scope="session")
def daemon(env: Env) -> Iterator[Daemon]:
    d = Daemon(env)
    d.start()
    try:
        yield d
    finally:
        client = d.client or CRIClient(env.endpoint)
        try:
            cleanup_env(env, client)
        finally:
            d.stop()
            cleanup_env(env, None)


@pytest.fixture
def cri(daemon: Daemon) -> CRIClient:
    assert daemon.client is not None
    return daemon.client


# ---- request builders -------------------------------------------------------------------------

def pod_config(name: str = "", **kw: Any) -> pb.PodSandboxConfig:
    name = name or f"pod-{secrets.token_hex(3)}"
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{secrets.token_hex(6)}",
                                                            namespace="test"), **kw)
    # kubelet sends these explicitly for an ordinary pod
    cfg.linux.security_context.namespace_options.pid = pb.CONTAINER
    return cfg


def ctr_config(name: str, command: list[str] | None = None, **kw: Any) -> pb.ContainerConfig:
    kw.setdefault("image", pb.ImageSpec(image=BUSYBOX))
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), command=command or ["sleep", "3600"], **kw)


def run_ctr(cri: CRIClient, sid: str, pcfg: pb.PodSandboxConfig, name: str, command: list[str],
            **kw: Any) -> str:
    cid = cri.create_container(sid, ctr_config(name, command, **kw), pcfg)
    cri.start_container(cid)
    return cid


def wait_state(cri: CRIClient, cid: str, state: int, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        st = cri.container_status(cid).status
        if st.state == state:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"container {cid[:12]} in state {st.state}, wanted {state}")
        time.sleep(0.05)


def code_of(fn: Any, *a: Any, **kw: Any) -> tuple[grpc.StatusCode, str]:
    """Call and expect an RPC error; return its (code, details)."""
    try:
        fn(*a, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded, an error was expected")


def crictl(env: Env, *args: str, input: bytes | None = None, timeout: float = 60,
           check: bool = True) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run([sys.executable, "-m", "kubeletpy", "crictl", "-r", env.endpoint, *args], input=input,
                       capture_output=True, timeout=timeout, cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(f"crictl {' '.join(args)} failed ({p.returncode}): {p.stderr.decode()}")
    return p
