"""Containers of one pod share network, IPC (/dev/shm), emptyDirs and optionally PIDs — not their roots."""

from __future__ import annotations

import os
import time

from cri.runtime import Mount, NamespaceMode, NamespaceOption, Runtime
from cri.runtime.types import (
    LinuxContainerConfig,
    LinuxContainerSecurityContext,
    LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext,
)

from .conftest import run


def test_two_containers_share_localhost_and_shm_not_rootfs(rt: Runtime, pod) -> None:
    sid = pod()
    web = run(rt, sid, "web", ["sh", "-c", "mkdir -p /www && echo hi-from-web > /www/index.html && "
                                           "echo shared > /dev/shm/note && touch /only-in-web && "
                                           "exec httpd -f -p 8080 -h /www"])
    side = run(rt, sid, "side", ["sleep", "300"])
    deadline = time.monotonic() + 5
    while True:
        r = rt.exec_sync(side, ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"], timeout=5)
        if r.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.stdout == b"hi-from-web\n", r
    assert rt.exec_sync(side, ["cat", "/dev/shm/note"], timeout=5).stdout == b"shared\n"
    assert rt.exec_sync(side, ["test", "-e", "/only-in-web"], timeout=5).exit_code == 1
    assert rt.exec_sync(web, ["test", "-e", "/only-in-web"], timeout=5).exit_code == 0
    pw, ps = rt.container_status(web).pid, rt.container_status(side).pid
    for ns in ("net", "ipc", "uts"):
        assert os.readlink(f"/proc/{pw}/ns/{ns}") == os.readlink(f"/proc/{ps}/ns/{ns}")
    for ns in ("mnt", "pid"):
        assert os.readlink(f"/proc/{pw}/ns/{ns}") != os.readlink(f"/proc/{ps}/ns/{ns}")
    # the netns is bind-mounted like `ip netns add` does, for the CNI step
    netns = rt.pod_sandbox_status(sid).netns_path
    assert os.stat(netns).st_ino == os.stat(f"/proc/{pw}/ns/net").st_ino


def test_empty_dir_and_host_path_mounts(rt: Runtime, pod, tmp_path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "data.txt").write_text("from-host\n")
    sid = pod()
    mounts = [Mount("/scratch", empty_dir="scratch"), Mount("/hostdata", str(host), readonly=True)]
    a = run(rt, sid, "a", ["sh", "-c", "echo from-a > /scratch/f; sleep 300"], mounts=mounts)
    b = run(rt, sid, "b", ["sleep", "300"], mounts=mounts)
    deadline = time.monotonic() + 5
    while rt.exec_sync(b, ["cat", "/scratch/f"], timeout=5).stdout != b"from-a\n":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert rt.exec_sync(a, ["cat", "/hostdata/data.txt"], timeout=5).stdout == b"from-host\n"
    r = rt.exec_sync(a, ["touch", "/hostdata/new"], timeout=5)
    assert r.exit_code != 0 and b"Read-only" in r.stderr


def test_shared_pid_namespace_infra_is_pid1_and_reaps(rt: Runtime, pod) -> None:
    ns = NamespaceOption(pid=NamespaceMode.POD)
    sid = pod(linux=LinuxPodSandboxConfig(security_context=LinuxSandboxSecurityContext(namespace_options=ns)))
    linux = LinuxContainerConfig(security_context=LinuxContainerSecurityContext(namespace_options=ns))
    # the subshell's child is orphaned at once and must be reaped by the infra (PID 1)
    a = run(rt, sid, "a", ["sh", "-c", "(sleep 0.2 &); sleep 300"], linux=linux)
    b = run(rt, sid, "b", ["sleep", "300"], linux=linux)
    out = rt.exec_sync(b, ["ps", "-o", "pid,comm"], timeout=5).stdout.decode().split("\n")[1:]
    assert out[0].split()[0] == "1" and "python" in out[0], out  # PID 1 is the infra
    assert sum("sleep" in line for line in out) >= 2, out  # b sees a's processes too
    time.sleep(0.6)
    stat = rt.exec_sync(a, ["sh", "-c", "cat /proc/[0-9]*/stat"], timeout=5).stdout.decode()
    assert ") Z " not in stat, stat  # no zombies


def test_network_hooks_get_the_netns_and_ip_is_reported(rt: Runtime, rt_roots: dict) -> None:
    from cri.runtime import NetworkResult, PodSandboxConfig, PodSandboxMetadata, PodSandboxState
    calls: list[tuple[str, str]] = []

    def setup(sid: str, netns: str, cfg: PodSandboxConfig) -> NetworkResult:
        # what CNI does: enter the bind-mounted netns (here: just check it is a live net namespace)
        fd = os.open(netns, os.O_RDONLY)
        try:
            assert os.fstat(fd).st_ino != os.stat("/proc/self/ns/net").st_ino
        finally:
            os.close(fd)
        calls.append(("setup", sid))
        return NetworkResult(ip="10.88.0.7", additional_ips=["fd00::7"])

    def teardown(sid: str, netns: str, cfg: PodSandboxConfig) -> None:
        assert os.path.exists(netns)
        calls.append(("teardown", sid))

    hooked = Runtime(rt_roots["root"], rt_roots["run_root"], rt_roots["log_root"],
                     cgroup_parent=rt_roots["cgroup_parent"], network_setup=setup, network_teardown=teardown,
                     prewarm_shim=False)
    try:
        sid = hooked.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata("net", "uid-net", "test"),
                                                      labels={"app": "net"}))
        st = hooked.pod_sandbox_status(sid)
        assert (st.ip, st.additional_ips, st.state) == ("10.88.0.7", ["fd00::7"], PodSandboxState.SANDBOX_READY)
        assert [s.id for s in hooked.list_pod_sandboxes(label_selector={"app": "net"})] == [sid]
        assert hooked.pod_sandbox_status(sid[:12]).id == sid  # unique prefixes work like crictl's
        hooked.stop_pod_sandbox(sid)
        assert hooked.pod_sandbox_status(sid).state == PodSandboxState.SANDBOX_NOTREADY
        assert not os.path.exists(st.netns_path)
        hooked.stop_pod_sandbox(sid)  # idempotent
        assert calls == [("setup", sid), ("teardown", sid)]
    finally:
        hooked.remove_pod_sandbox(sid)
        hooked.close()
    hooked.remove_pod_sandbox(sid)  # idempotent


def test_host_to_container_propagation(rt: Runtime, pod, tmp_path) -> None:
    """rslave (HostToContainer): a mount made on the host under a hostPath later shows up inside."""
    from cri.runtime import MountPropagation
    from cri.shim import linux as L
    src = tmp_path / "prop"
    src.mkdir()
    L.mount(str(src), str(src), None, L.MS_BIND)
    try:
        L.mount(None, str(src), None, L.MS_SHARED)  # propagation needs a shared peer group on the host
        sid = pod()
        slave = run(rt, sid, "slave", ["sleep", "300"],
                    mounts=[Mount("/prop", str(src), propagation=MountPropagation.PROPAGATION_HOST_TO_CONTAINER)])
        private = run(rt, sid, "private", ["sleep", "300"], mounts=[Mount("/prop", str(src))])
        (src / "late").mkdir()
        L.mount("tmpfs", str(src / "late"), "tmpfs", 0, "size=1m")
        try:
            (src / "late" / "file").write_text("late\n")
            assert rt.exec_sync(slave, ["cat", "/prop/late/file"], timeout=5).stdout == b"late\n"
            assert rt.exec_sync(private, ["test", "-e", "/prop/late/file"], timeout=5).exit_code == 1
        finally:
            L.umount(str(src / "late"), L.MNT_DETACH)
    finally:
        L.umount(str(src), L.MNT_DETACH)


def test_target_pid_namespace(rt: Runtime, pod) -> None:
    """NamespaceMode.TARGET: a debug container joins another container's PID namespace."""
    sid = pod()
    app = run(rt, sid, "app", ["sleep", "300"])
    dbg = run(rt, sid, "debug", ["sleep", "301"],
              linux=LinuxContainerConfig(security_context=LinuxContainerSecurityContext(
                  namespace_options=NamespaceOption(pid=NamespaceMode.TARGET, target_id=app))))
    out = rt.exec_sync(dbg, ["ps", "-o", "pid,args"], timeout=5).stdout.decode()
    assert "sleep 300" in out and "sleep 301" in out
    assert os.readlink(f"/proc/{rt.container_status(app).pid}/ns/pid") == \
        os.readlink(f"/proc/{rt.container_status(dbg).pid}/ns/pid")


def test_concurrent_pods_from_many_threads(rt: Runtime, pod) -> None:
    """The CRI server calls us from a thread pool: pods created, used and removed in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from cri.runtime import ContainerState

    def one(i: int) -> tuple[str, bytes]:
        sid = pod(name=f"par-{i}-{os.getpid()}")
        cid = run(rt, sid, "c", ["sh", "-c", f"echo ready-{i}; sleep 300"])
        out = rt.exec_sync(cid, ["hostname"], timeout=10).stdout
        rt.stop_container(cid, timeout=0)
        assert rt.container_status(cid).state == ContainerState.CONTAINER_EXITED
        rt.remove_pod_sandbox(sid)
        return sid, out

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(one, range(6)))
    assert len({sid for sid, _ in results}) == 6
    assert all(out.strip().startswith(b"par-") for _, out in results)


def test_shim_and_infra_memory_per_pod(rt: Runtime, pod) -> None:
    """Budget: ≤ 5 MiB PSS per pod for shim + infra (+ the warm child); the bench measures it at 50 pods."""
    def pss_kib(pid: int) -> int:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))

    sids = [pod() for _ in range(10)]
    time.sleep(0.1)  # let each shim fork its warm child
    per_pod = []
    for sid in sids:
        st = rt.pod_sandbox_status(sid)
        with open(f"/proc/{st.shim_pid}/task/{st.shim_pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        assert st.infra_pid in kids and len(kids) == 2  # infra + the warm child, no containers here
        per_pod.append(pss_kib(st.shim_pid) + sum(pss_kib(k) for k in kids))
    assert max(per_pod) / 1024 <= 5.0, per_pod
