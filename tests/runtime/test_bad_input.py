"""Bad input gives a clear typed error and leaves nothing behind on the host."""

from __future__ import annotations

import pytest

from cri.runtime import (
    AlreadyExists,
    ContainerState,
    FailedPrecondition,
    InvalidArgument,
    LinuxContainerResources,
    Mount,
    NotFound,
    PodSandboxConfig,
    PodSandboxMetadata,
    Runtime,
)
from cri.runtime.types import (
    ContainerConfig,
    ContainerMetadata,
    ImageSpec,
    LinuxContainerConfig,
    LinuxContainerSecurityContext,
    LinuxPodSandboxConfig,
)

from .conftest import ctr_config, host_snapshot, wait_exit


def test_bad_input_errors_and_no_leaks(rt: Runtime, pod, rt_roots: dict) -> None:
    sid = pod(name="bad-input")
    before = host_snapshot(rt_roots)

    with pytest.raises(NotFound, match="not found"):
        rt.create_container(sid, ContainerConfig(metadata=ContainerMetadata("x"), image=ImageSpec("nope:1")))
    with pytest.raises(InvalidArgument, match="must be absolute"):
        rt.create_container(sid, ctr_config("m1", ["true"], mounts=[Mount("relative", "/tmp")]))
    with pytest.raises(InvalidArgument, match="does not exist"):
        rt.create_container(sid, ctr_config("m2", ["true"], mounts=[Mount("/x", "/does/not/exist")]))
    with pytest.raises(InvalidArgument, match="negative"):
        rt.create_container(sid, ctr_config("neg", ["true"], linux=LinuxContainerConfig(
            resources=LinuxContainerResources(memory_limit_in_bytes=-1))))
    with pytest.raises(InvalidArgument, match="cpu_quota"):
        rt.create_container(sid, ctr_config("neg2", ["true"], linux=LinuxContainerConfig(
            resources=LinuxContainerResources(cpu_quota=-5))))
    with pytest.raises(InvalidArgument, match="seccomp"):
        rt.create_container(sid, ctr_config("sc", ["true"], linux=LinuxContainerConfig(
            security_context=LinuxContainerSecurityContext(seccomp_profile_path="bogus/profile"))))
    with pytest.raises(InvalidArgument, match="unable to find user"):
        rt.create_container(sid, ctr_config("u", ["true"], linux=LinuxContainerConfig(
            security_context=LinuxContainerSecurityContext(run_as_username="nosuchuser"))))
    with pytest.raises(InvalidArgument, match="unknown capability"):
        from cri.runtime.types import Capability
        rt.create_container(sid, ctr_config("cap", ["true"], linux=LinuxContainerConfig(
            security_context=LinuxContainerSecurityContext(capabilities=Capability(["CAP_BOGUS"])))))
    with pytest.raises(NotFound):
        rt.create_container("0" * 64, ctr_config("y", ["true"]))
    with pytest.raises(NotFound):
        rt.start_container("f" * 64)
    with pytest.raises(InvalidArgument, match="not namespaced"):
        rt.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata("s", "uid-s", "test"),
                                            linux=LinuxPodSandboxConfig(sysctls={"kernel.panic": "1"})))
    with pytest.raises(InvalidArgument, match="needs name"):
        rt.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata("", "u", "test")))

    def failing_hook(sandbox_id: str, netns: str, cfg: PodSandboxConfig) -> None:
        raise OSError("no CNI today")

    with pytest.raises(Exception, match="no CNI today"):
        rt.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata("n", "uid-n", "test")),
                           network_setup=failing_hook)
    after = host_snapshot(rt_roots)
    assert after == before

    # duplicates name the existing object
    existing = rt.pod_sandbox_status(sid).metadata
    with pytest.raises(AlreadyExists) as exc:
        rt.run_pod_sandbox(PodSandboxConfig(metadata=existing))
    assert exc.value.existing_id == sid
    cid = rt.create_container(sid, ctr_config("dup", ["true"]))
    with pytest.raises(AlreadyExists) as exc2:
        rt.create_container(sid, ctr_config("dup", ["true"]))
    assert exc2.value.existing_id == cid
    rt.remove_container(cid)


@pytest.mark.parametrize("cmd,needle", [(["/no/such/binary"], "no such file"),
                                        (["nosuchcmd"], "executable file not found in $PATH"),
                                        (["/etc/passwd"], "permission denied")])
def test_bad_command_is_a_start_error(rt: Runtime, pod, cmd: list[str], needle: str) -> None:
    sid = pod()
    cid = rt.create_container(sid, ctr_config("bad", cmd))
    with pytest.raises(FailedPrecondition, match="failed to start container") as exc:
        rt.start_container(cid)
    assert needle in str(exc.value)
    st = rt.container_status(cid)
    assert st.state == ContainerState.CONTAINER_EXITED
    assert st.reason == "StartError" and needle in st.message and st.exit_code == 128
    with pytest.raises(FailedPrecondition):
        rt.start_container(cid)  # not CREATED anymore


def test_exec_format_error(rt: Runtime, pod) -> None:
    sid = pod()
    c = rt.create_container(sid, ctr_config("fmt", ["sh", "-c", "printf 'garbage' > /bad && chmod +x /bad; sleep 300"]))
    rt.start_container(c)
    import time
    deadline = time.monotonic() + 5
    while rt.exec_sync(c, ["test", "-x", "/bad"], timeout=5).exit_code != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = rt.exec_sync(c, ["/bad"], timeout=5)
    assert r.exit_code == 126 and b"exec format error" in r.stderr
    rt.stop_container(c, 0)
    assert wait_exit(rt, c).exit_code == 137
    rt.remove_container(c)
    rt.remove_container(c)  # idempotent
    with pytest.raises(NotFound):
        rt.container_status(c)
