"""Users and groups, capabilities, no_new_privs, read-only root, sysctls, privileged, seccomp."""

from __future__ import annotations

import json

import pytest

from cri.runtime import InvalidArgument, Runtime
from cri.runtime.spec import CAP_NUM, own_bounding_set
from cri.runtime.types import (
    Capability,
    Int64Value,
    LinuxContainerConfig,
    LinuxContainerSecurityContext,
    LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext,
    ProfileType,
    SecurityProfile,
)
from cri.seccomp import parse_selector

from .conftest import ctr_config, run


def _sc(**kw: object) -> LinuxContainerConfig:
    return LinuxContainerConfig(security_context=LinuxContainerSecurityContext(**kw))


def _status(rt: Runtime, cid: str, field: str) -> str:
    out = rt.exec_sync(cid, ["grep", f"^{field}:", "/proc/self/status"], timeout=5).stdout.decode()
    return out.split(":", 1)[1].strip()


def test_user_groups_and_exec_inherits_them(rt: Runtime, pod) -> None:
    sid = pod(linux=LinuxPodSandboxConfig(security_context=LinuxSandboxSecurityContext(supplemental_groups=[4242])))
    cid = run(rt, sid, "nobody", ["sleep", "300"],
              linux=_sc(run_as_username="nobody", no_new_privs=True, supplemental_groups=[1234]))
    out = rt.exec_sync(cid, ["id"], timeout=5).stdout.decode()
    assert out.startswith("uid=65534(nobody) gid=65534(nobody)"), out
    assert "4242" in out and "1234" in out
    assert int(_status(rt, cid, "CapEff"), 16) == 0          # non-root loses its caps at exec
    assert _status(rt, cid, "NoNewPrivs") == "1"
    assert rt.exec_sync(cid, ["sh", "-c", "echo $HOME"], timeout=5).stdout == b"/nonexistent\n"
    num = run(rt, sid, "numeric", ["sleep", "300"], linux=_sc(run_as_user=Int64Value(1000),
                                                             run_as_group=Int64Value(2000)))
    assert rt.exec_sync(num, ["id", "-u"], timeout=5).stdout == b"1000\n"
    assert rt.exec_sync(num, ["id", "-g"], timeout=5).stdout == b"2000\n"


def test_capabilities_add_drop_privileged_readonly_and_sysctls(rt: Runtime, pod) -> None:
    sid = pod(linux=LinuxPodSandboxConfig(
        sysctls={"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shmmni": "2048"},
        security_context=LinuxSandboxSecurityContext(privileged=True)))
    c = run(rt, sid, "caps", ["sleep", "300"], linux=_sc(
        capabilities=Capability(add_capabilities=["NET_ADMIN", "CAP_SYS_TIME"], drop_capabilities=["CHOWN"]),
        readonly_rootfs=True))
    eff = int(_status(rt, c, "CapEff"), 16)
    assert eff & (1 << CAP_NUM["NET_ADMIN"]) and eff & (1 << CAP_NUM["SYS_TIME"])
    assert not eff & (1 << CAP_NUM["CHOWN"]) and not eff & (1 << CAP_NUM["SYS_ADMIN"])
    assert int(_status(rt, c, "CapBnd"), 16) == eff
    r = rt.exec_sync(c, ["touch", "/newfile"], timeout=5)
    assert r.exit_code != 0 and b"Read-only" in r.stderr
    assert rt.exec_sync(c, ["touch", "/dev/shm/ok"], timeout=5).exit_code == 0
    assert rt.exec_sync(c, ["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"], timeout=5).stdout == b"80\n"
    assert rt.exec_sync(c, ["cat", "/proc/sys/kernel/shmmni"], timeout=5).stdout == b"2048\n"

    p = run(rt, sid, "priv", ["sleep", "300"], linux=_sc(privileged=True))
    assert int(_status(rt, p, "CapEff"), 16) == own_bounding_set()
    assert _status(rt, p, "Seccomp") == "0"
    assert rt.exec_sync(p, ["sh", "-c", "cat /proc/interrupts | wc -c"], timeout=5).stdout.strip() != b"0"
    mi = rt.exec_sync(p, ["cat", "/proc/self/mountinfo"], timeout=5).stdout.decode()
    assert " /proc/sys " not in mi  # no read-only overlays for privileged
    unpriv = pod()
    with pytest.raises(InvalidArgument, match="privileged pod"):
        rt.create_container(unpriv, ctr_config("p", ["true"], linux=_sc(privileged=True)))


def test_seccomp_profiles(rt: Runtime, pod, tmp_path) -> None:
    sid = pod()
    default = run(rt, sid, "default", ["sleep", "300"],
                  linux=_sc(seccomp=SecurityProfile(ProfileType.RuntimeDefault)))
    assert _status(rt, default, "Seccomp") == "2"
    assert rt.exec_sync(default, ["ls", "/"], timeout=5).exit_code == 0
    # unshare(2) is refused by RuntimeDefault without CAP_SYS_ADMIN (EPERM)
    r = rt.exec_sync(default, ["unshare", "-U", "true"], timeout=5)
    assert r.exit_code != 0 and b"Operation not permitted" in r.stderr

    unconfined = run(rt, sid, "unconfined", ["sleep", "300"], linux=_sc(seccomp_profile_path="unconfined"))
    assert _status(rt, unconfined, "Seccomp") == "0"

    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    path = tmp_path / "no-mkdir.json"
    path.write_text(json.dumps(profile))
    local = run(rt, sid, "local", ["sleep", "300"],
                linux=_sc(seccomp=SecurityProfile(ProfileType.Localhost, str(path))))
    r = rt.exec_sync(local, ["mkdir", "/x"], timeout=5)
    assert r.exit_code != 0 and b"Permission denied" in r.stderr
    assert rt.exec_sync(local, ["touch", "/y"], timeout=5).exit_code == 0
    legacy = run(rt, sid, "legacy", ["sleep", "300"], linux=_sc(seccomp_profile_path=f"localhost/{path}"))
    assert rt.exec_sync(legacy, ["mkdir", "/x"], timeout=5).exit_code != 0


def test_seccomp_selector_forms() -> None:
    assert parse_selector("runtime/default") == ("runtime_default", "")
    assert parse_selector("docker/default") == ("runtime_default", "")
    assert parse_selector(0) == ("runtime_default", "")
    assert parse_selector("unconfined") == ("unconfined", "")
    assert parse_selector(2, "/p.json") == ("localhost", "/p.json")
    assert parse_selector("localhost//abs/p.json") == ("localhost", "/abs/p.json")
    for bad in ("localhost/relative.json", "bogus"):
        with pytest.raises(ValueError):
            parse_selector(bad)
