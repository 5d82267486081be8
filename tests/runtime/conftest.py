"""Fixtures for the runtime tests: a real Runtime on tmp roots and a unique cgroup parent.

Other engineers run tests on this host at the same time, so nothing here uses
the default paths, and every sandbox is removed in a finalizer, also on failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from cri.cgroups import detect_version
from cri.images import ImageStore
from cri.runtime import (
    ContainerConfig,
    ContainerMetadata,
    ContainerState,
    ImageSpec,
    PodSandboxConfig,
    PodSandboxMetadata,
    Runtime,
)

BUSYBOX = "kubeletpy.local/busybox:latest"


@pytest.fixture(scope="session")
def rt_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("rt")
    roots = {"root": str(base / "state"), "run_root": str(base / "run"), "log_root": str(base / "logs"),
             "cgroup_parent": f"kubeletpy-test-{secrets.token_hex(4)}"}
    ImageStore(root=roots["root"]).build_busybox()
    yield roots
    parent = roots["cgroup_parent"]
    leaked = []
    for ctrl in ("cpu", "cpuacct", "memory", "pids"):
        d = f"/sys/fs/cgroup/{ctrl}/{parent}"
        if detect_version() == 1 and os.path.isdir(d):
            for sub, dirs, _ in os.walk(d, topdown=False):
                for x in dirs:
                    leaked.append(os.path.join(sub, x))
                    os.rmdir(os.path.join(sub, x))
            os.rmdir(d)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if str(base) in line]
    shutil.rmtree(base, ignore_errors=True)
    # every test removed what it made: the session must end with no cgroups or mounts left
    assert not leaked, f"leaked cgroups: {leaked}"
    assert not mounts, f"leaked mounts: {mounts}"


@pytest.fixture(scope="session")
def rt(rt_roots: dict) -> Iterator[Runtime]:
    r = Runtime(rt_roots["root"], rt_roots["run_root"], rt_roots["log_root"],
                cgroup_parent=rt_roots["cgroup_parent"])
    yield r
    for sb in r.list_pod_sandboxes():
        r.remove_pod_sandbox(sb.id)
    r.close()


@pytest.fixture
def pod(rt: Runtime) -> Iterator[Callable[..., str]]:
    """Factory: pod(**PodSandboxConfig fields) → sandbox id; removed at teardown whatever happens."""
    made: list[str] = []

    def make(name: str = "", **kw: object) -> str:
        name = name or f"pod-{secrets.token_hex(3)}"
        cfg = PodSandboxConfig(metadata=PodSandboxMetadata(name, f"uid-{secrets.token_hex(6)}", "test"), **kw)
        sid = rt.run_pod_sandbox(cfg)
        made.append(sid)
        return sid

    yield make
    for sid in made:
        rt.remove_pod_sandbox(sid)


def ctr_config(name: str, command: list[str] | None = None, **kw: object) -> ContainerConfig:
    return ContainerConfig(metadata=ContainerMetadata(name), image=ImageSpec(BUSYBOX), command=command or [], **kw)


def run(rt: Runtime, sid: str, name: str, command: list[str], **kw: object) -> str:
    cid = rt.create_container(sid, ctr_config(name, command, **kw))
    rt.start_container(cid)
    return cid


def wait_exit(rt: Runtime, cid: str, timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = rt.container_status(cid)
        if st.state == ContainerState.CONTAINER_EXITED:
            return st
        time.sleep(0.02)
    raise AssertionError(f"container {cid} still {rt.container_status(cid).state.name} after {timeout}s")


def log_lines(path: str) -> list[tuple[str, str, str, str]]:
    out = []
    with open(path) as f:
        for line in f:
            ts, stream, tag, msg = line.rstrip("\n").split(" ", 3)
            out.append((ts, stream, tag, msg))
    return out


def host_snapshot(rt_roots: dict) -> dict:
    """What a leak would show up in: mounts, cgroups, netns files, shim/container processes."""
    # only mounts under our roots: other engineers' tests mount and unmount concurrently
    base = os.path.commonpath([rt_roots["root"], rt_roots["run_root"], rt_roots["log_root"]])
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(p for p in (line.split()[4] for line in f) if p.startswith(base))
    cgroups = []
    for ctrl in ("memory", "pids"):
        d = f"/sys/fs/cgroup/{ctrl}/{rt_roots['cgroup_parent']}"
        for sub, dirs, _ in os.walk(d):
            cgroups += [os.path.join(sub, x) for x in dirs]
    # our shims (stderr goes to our run root's shim.log; other people's shims may run concurrently),
    # and every process whose parent is one of them (infra, containers)
    procs: set[int] = set()
    parents: dict[int, int] = {}
    me = os.getpid()
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            parents[int(p)] = ppid
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            if b"cri/shim/main.py" in cmd and ppid != me and \
                    os.readlink(f"/proc/{p}/fd/2").startswith(rt_roots["run_root"]):
                procs.add(int(p))  # (a child of ours would be the zygote: it stays)
        except OSError:
            continue
    procs |= {pid for pid, ppid in parents.items() if ppid in procs}
    return {"mounts": mounts, "cgroups": sorted(cgroups), "procs": procs,
            "netns": sorted(os.listdir(os.path.join(rt_roots["run_root"], "netns"))),
            "containers": sorted(os.listdir(os.path.join(rt_roots["root"], "containers"))),
            "sandboxes": sorted(os.listdir(os.path.join(rt_roots["root"], "sandboxes"))),
            "names": sorted(os.path.join(sub, f) for sub, _, files in os.walk(os.path.join(rt_roots["root"], "names"))
                            for f in files)}
