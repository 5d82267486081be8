"""A container sees its own processes, hostname, mounts and image root — nothing of the host."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from pathlib import Path

from cri.runtime import ContainerState, DNSConfig, NamespaceMode, NamespaceOption, Runtime
from cri.runtime.spec import DEFAULT_CAPS, cap_mask
from cri.runtime.types import (
    ContainerConfig,
    ContainerMetadata,
    ImageSpec,
    LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext,
    PodSandboxConfig,
    PodSandboxMetadata,
)

from .conftest import BUSYBOX, run


def test_container_is_isolated(rt: Runtime, pod) -> None:
    sid = pod(hostname="isolated-host")
    cid = run(rt, sid, "app", ["sleep", "300"])
    st = rt.container_status(cid)
    assert st.state == ContainerState.CONTAINER_RUNNING and st.pid > 0

    ps = rt.exec_sync(cid, ["ps", "-o", "pid,comm"], timeout=10)
    lines = ps.stdout.decode().split("\n")[1:]
    assert lines[0].split() == ["1", "sleep"], ps.stdout  # PID 1 is the container process

    assert rt.exec_sync(cid, ["hostname"], timeout=10).stdout == b"isolated-host\n"

    mi = rt.exec_sync(cid, ["cat", "/proc/self/mountinfo"], timeout=10).stdout.decode().splitlines()
    points = [line.split()[4] for line in mi]
    fstypes = {line.split()[4]: line.split(" - ")[1].split()[0] for line in mi}
    assert points[0] == "/" and fstypes["/"] == "overlay"
    allowed = ("/", "/proc", "/dev", "/sys", "/etc")
    assert all(p == "/" or p.startswith(allowed[1:]) for p in points), points
    assert not any(p.startswith(("/work", "/tmp", "/run", "/var", "/home")) for p in points), points

    ls = rt.exec_sync(cid, ["ls", "/"], timeout=10).stdout.decode().split()
    assert "bin" in ls and "work" not in ls  # the root is the image, not the host
    repo = str(Path(__file__).resolve().parents[2])  # exists on the host, not in the image
    assert rt.exec_sync(cid, ["test", "-e", repo], timeout=10).exit_code == 1


def test_standard_mounts_masks_and_caps(rt: Runtime, pod) -> None:
    sid = pod(dns_config=DNSConfig(servers=["10.96.0.10"], searches=["test.svc.cluster.local"],
                                   options=["ndots:5"]))
    cid = run(rt, sid, "app", ["sleep", "300"])
    resolv = rt.exec_sync(cid, ["cat", "/etc/resolv.conf"], timeout=10).stdout.decode()
    assert resolv == "nameserver 10.96.0.10\nsearch test.svc.cluster.local\noptions ndots:5\n"
    hosts = rt.exec_sync(cid, ["cat", "/etc/hosts"], timeout=10).stdout.decode()
    assert "127.0.0.1\tlocalhost" in hosts and rt.pod_sandbox_status(sid).metadata.name in hosts

    def sh(cmd: str) -> tuple[int, str]:
        r = rt.exec_sync(cid, ["sh", "-c", cmd], timeout=10)
        return r.exit_code, (r.stdout + r.stderr).decode()

    for dev in ("null", "zero", "full", "random", "urandom", "tty"):
        assert sh(f"test -c /dev/{dev}")[0] == 0, dev
    assert sh("readlink /dev/ptmx")[1].strip() == "pts/ptmx"
    assert sh("head -c 4 /dev/urandom | wc -c")[1].strip() == "4"
    assert sh("grep -E ' /dev/(pts|shm|mqueue) ' /proc/self/mountinfo | wc -l")[1].strip() == "3"
    assert sh("cat /proc/interrupts | wc -c")[1].strip() == "0"      # masked with /dev/null
    assert sh("ls /sys/firmware | wc -l")[1].strip() == "0"           # masked with an empty tmpfs
    code, out = sh("echo 1 > /proc/sys/kernel/domainname")
    assert code != 0 and "Read-only" in out
    assert sh("touch /sys/x")[0] != 0                                 # /sys read-only
    cap_eff = int(sh("grep CapEff /proc/self/status")[1].split()[1], 16)
    assert cap_eff == cap_mask(set(DEFAULT_CAPS))
    assert sh("grep NoNewPrivs /proc/self/status")[1].split()[1] == "0"
    # nothing of the shim's (or CPython's) signal set-up leaks into the container
    for field in ("SigBlk", "SigIgn"):
        assert int(sh(f"grep {field} /proc/1/status")[1].split()[1], 16) == 0, field
    assert sh("cat /etc/hostname")[1].strip() == rt.pod_sandbox_status(sid).metadata.name


def test_pod_with_host_namespaces(rt: Runtime, pod) -> None:
    sid = pod(linux=LinuxPodSandboxConfig(security_context=LinuxSandboxSecurityContext(
        namespace_options=NamespaceOption(network=NamespaceMode.NODE, pid=NamespaceMode.NODE,
                                          ipc=NamespaceMode.NODE))))
    status = rt.pod_sandbox_status(sid)
    assert status.netns_path == ""
    cid = run(rt, sid, "app", ["sleep", "300"],
              linux=_ns_linux(NamespaceOption(network=NamespaceMode.NODE, pid=NamespaceMode.NODE,
                                              ipc=NamespaceMode.NODE)))
    assert rt.exec_sync(cid, ["hostname"], timeout=10).stdout.decode().strip() == socket.gethostname()
    pid = rt.container_status(cid).pid
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/ipc") == os.readlink("/proc/self/ns/ipc")
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def _ns_linux(ns: NamespaceOption):  # type: ignore[no-untyped-def]
    from cri.runtime.types import LinuxContainerConfig, LinuxContainerSecurityContext
    return LinuxContainerConfig(security_context=LinuxContainerSecurityContext(namespace_options=ns))


def _set_raw(sig: int, handler: int) -> None:
    """rt_sigaction with the raw syscall: glibc refuses its reserved signals 32 and 33."""
    libc = ctypes.CDLL(None, use_errno=True)
    act = (ctypes.c_ulong * 4)(handler, 0, 0, 0)
    assert libc.syscall(13, ctypes.c_int(sig), ctypes.byref(act), None, ctypes.c_size_t(8)) == 0


def test_signals_ignored_by_whoever_started_the_runtime_do_not_reach_containers(rt_roots: dict) -> None:
    """A background shell job ignores SIGINT/SIGQUIT; some launchers ignore signal 32. Dispositions
    survive fork and execve, so the shim must reset them all, as runc does."""
    old_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _set_raw(32, 1)  # SIG_IGN
    try:
        r = Runtime(rt_roots["root"], rt_roots["run_root"] + "-sig", rt_roots["log_root"],
                    cgroup_parent=rt_roots["cgroup_parent"])
    finally:
        signal.signal(signal.SIGUSR1, old_usr1)
        _set_raw(32, 0)
    try:
        sid = r.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata("sig", "uid-sig", "test")))
        cid = r.create_container(sid, ContainerConfig(metadata=ContainerMetadata("c"),
                                                      image=ImageSpec(BUSYBOX), command=["sleep", "60"]))
        r.start_container(cid)
        out = r.exec_sync(cid, ["grep", "SigIgn", "/proc/1/status"], timeout=10).stdout.decode()
        assert int(out.split()[1], 16) == 0, out
    finally:
        for sb in r.list_pod_sandboxes():
            r.remove_pod_sandbox(sb.id)
        r.close()
