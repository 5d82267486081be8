"""Create stages the container in the shim's warm child (Shim.op_prepare); start lets it execve.

Staging is an optimisation: every CRI-visible behaviour must stay what it was without it.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from cri.runtime import ContainerState, FailedPrecondition, Runtime

from .conftest import ctr_config, host_snapshot, wait_exit


def _cgroup_tasks(rt: Runtime, cid: str) -> list[int]:
    with open(os.path.join(rt.root, "containers", cid, "container.json")) as f:
        spec = json.load(f)["spec"]
    try:
        with open(spec["cgroup_procs"][0]) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _shim_children(rt: Runtime, sid: str) -> set[int]:
    shim = rt.pod_sandbox_status(sid).shim_pid
    with open(f"/proc/{shim}/task/{shim}/children") as f:
        return {int(x) for x in f.read().split()}


def _settled(rt: Runtime, sid: str) -> None:
    """Wait for the shim's warm child (forked right after the shim reported ready), so that a
    before/after comparison of host processes doesn't depend on when it appeared."""
    deadline = time.monotonic() + 5
    while len(_shim_children(rt, sid)) < 2:
        assert time.monotonic() < deadline, "the shim forked no warm child"
        time.sleep(0.01)


def _mnt_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def _wait_staged(rt: Runtime, sid: str, cid: str) -> int:
    """The shim's child that holds the staged container: it has pivoted into the container's own
    root (the same overlay as the host's mount of it)."""
    rootfs = os.stat(rt.snapshots.mounts(cid))
    deadline = time.monotonic() + 5
    while True:
        for pid in _shim_children(rt, sid) - {rt.pod_sandbox_status(sid).infra_pid}:
            try:
                root = os.stat(f"/proc/{pid}/root/")
                if (root.st_dev, root.st_ino) == (rootfs.st_dev, rootfs.st_ino) and _mnt_ns(pid) != _mnt_ns(os.getpid()) \
                        and os.stat(f"/proc/{pid}/root/dev/null").st_rdev == os.makedev(1, 3):
                    return pid
            except OSError:
                pass
        assert time.monotonic() < deadline, "create did not stage the container in a warm child"
        time.sleep(0.01)


def test_created_container_is_staged_and_starts(rt: Runtime, pod) -> None:
    sid = pod()
    cid = rt.create_container(sid, ctr_config("staged", ["sh", "-c", "echo hi; cat /etc/hostname"]))
    staged = _wait_staged(rt, sid, cid)
    assert _cgroup_tasks(rt, cid) in ([], [staged])  # joined if the cgroups existed when it was built
    st = rt.container_status(cid)
    assert st.state == ContainerState.CONTAINER_CREATED and st.pid == 0 and st.started_at == 0
    rt.start_container(cid)
    st = wait_exit(rt, cid)
    assert st.exit_code == 0 and st.reason == "Completed"
    with open(os.path.join(rt.root, "containers", cid, "process.json")) as f:
        assert json.load(f)["pid"] == staged  # the staged child became the container
    with open(st.log_path) as f:
        out = [line.rstrip("\n").split(" ", 3)[3] for line in f]
    assert out[0] == "hi" and len(out) == 2
    rt.remove_container(cid)


def test_removing_a_staged_container_leaves_nothing(rt: Runtime, pod, rt_roots: dict) -> None:
    sid = pod()
    _settled(rt, sid)
    before = host_snapshot(rt_roots)
    cid = rt.create_container(sid, ctr_config("never-started", ["true"]))
    staged = _wait_staged(rt, sid, cid)
    # Usually it has joined the container's cgroups by now (then removal must kill it before
    # removing them); if it finished building before the runtime made them, it joins at start.
    deadline = time.monotonic() + 1
    while _cgroup_tasks(rt, cid) != [staged] and time.monotonic() < deadline:
        time.sleep(0.01)
    rt.remove_container(cid)
    # the staged child is gone with its cgroup, rootfs and record; the shim forked a new warm
    # child meanwhile (another pid), so processes are compared by count
    after = host_snapshot(rt_roots)
    deadline = time.monotonic() + 5
    while len(after["procs"]) != len(before["procs"]) and time.monotonic() < deadline:
        time.sleep(0.02)
        after = host_snapshot(rt_roots)
    assert len(after.pop("procs")) == len(before.pop("procs"))
    assert after == before


def test_staged_setup_error_is_a_start_error(rt: Runtime, pod) -> None:
    """The child fails while staging (cwd is a file): reported at start, like before, not at create."""
    sid = pod()
    cid = rt.create_container(sid, ctr_config("bad-cwd", ["true"], working_dir="/etc/passwd"))
    assert rt.container_status(cid).state == ContainerState.CONTAINER_CREATED
    with pytest.raises(FailedPrecondition, match="failed to start container"):
        rt.start_container(cid)
    st = rt.container_status(cid)
    assert st.state == ContainerState.CONTAINER_EXITED and st.reason == "StartError" and st.exit_code == 128
    rt.remove_container(cid)


def test_staged_container_started_by_a_new_runtime_instance(rt: Runtime, pod, rt_roots: dict) -> None:
    sid = pod()
    cid = rt.create_container(sid, ctr_config("restart", ["sh", "-c", "exit 3"]))
    _wait_staged(rt, sid, cid)
    other = Runtime(rt_roots["root"], rt_roots["run_root"], rt_roots["log_root"],
                    cgroup_parent=rt_roots["cgroup_parent"], prewarm_shim=False)
    try:
        other.start_container(cid)
        assert wait_exit(other, cid).exit_code == 3
    finally:
        other.close()
    rt.remove_container(cid)


def test_pod_removal_ends_staged_containers(rt: Runtime, pod, rt_roots: dict) -> None:
    before = host_snapshot(rt_roots)
    sid = pod()
    cids = [rt.create_container(sid, ctr_config(f"c{i}", ["true"])) for i in range(2)]
    assert len({_wait_staged(rt, sid, cid) for cid in cids}) == 2  # back to back: both staged
    rt.remove_pod_sandbox(sid)
    assert host_snapshot(rt_roots) == before


def test_failed_create_after_staging_leaves_nothing(rt: Runtime, pod, rt_roots: dict, monkeypatch) -> None:
    """The record write fails after the shim staged the container (and it may have joined the
    container's cgroups): the undo kills the staged child before removing the cgroups and rootfs."""
    import cri.runtime.runtime as runtime_mod
    sid = pod()
    _settled(rt, sid)
    before = host_snapshot(rt_roots)
    real = runtime_mod._write_record

    def failing(path: object, obj: dict) -> None:
        if str(path).endswith("container.json"):
            time.sleep(0.2)  # the staged child has built and joined the cgroups by now
            raise OSError(28, "No space left on device")
        real(path, obj)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime_mod, "_write_record", failing)
    with pytest.raises(OSError, match="No space"):
        rt.create_container(sid, ctr_config("no-record", ["true"]))
    monkeypatch.undo()
    after = host_snapshot(rt_roots)
    deadline = time.monotonic() + 5
    while len(after["procs"]) != len(before["procs"]) and time.monotonic() < deadline:
        time.sleep(0.02)
        after = host_snapshot(rt_roots)
    assert len(after.pop("procs")) == len(before.pop("procs"))
    assert after == before


def test_spawn_of_a_staged_spec_is_recognised_without_parsing() -> None:
    """The runtime re-sends the spec from its record; it encodes to the prepare request's bytes."""
    from cri.shim.server import Shim
    shim = Shim.__new__(Shim)  # only the staged table is used
    spec = {"id": "c1", "symlinks": [("/proc/self/fd", "/dev/fd")], "env": ["X=ü\"\\"], "n": 1 << 40}
    prepare = json.dumps({"op": "prepare", "spec": spec}).encode()
    shim.staged = {"c1": {"spec": json.loads(prepare)["spec"], "raw": prepare[len(b'{"op": "prepare", "spec": '):]}}
    from_record = json.loads(json.dumps(spec))
    req = shim.staged_spawn(json.dumps({"op": "spawn", "spec": from_record}).encode())
    assert req is not None and req["spec"] is shim.staged["c1"]["spec"]
    assert shim.staged_spawn(json.dumps({"op": "spawn", "spec": {**from_record, "n": 1}}).encode()) is None
    assert shim.staged_spawn(json.dumps({"op": "kill", "id": "c1"}).encode()) is None


def test_staged_child_joins_late_cgroups_at_start(rt: Runtime, pod, monkeypatch) -> None:
    """The child finishes building before the runtime has made the container's cgroups: it must
    join them at start, before the container runs (its limits apply)."""
    sid = pod()
    _settled(rt, sid)
    mgr_type = type(rt._cg("probe"))
    real_create = mgr_type.create

    def slow_create(self: object) -> None:
        time.sleep(0.5)  # the staged child is done building by now
        real_create(self)  # type: ignore[arg-type]

    monkeypatch.setattr(mgr_type, "create", slow_create)
    cid = rt.create_container(sid, ctr_config("late-cg", ["sleep", "300"]))
    monkeypatch.undo()
    staged = _wait_staged(rt, sid, cid)
    rt.start_container(cid)
    st = rt.container_status(cid)
    assert st.state == ContainerState.CONTAINER_RUNNING and st.pid == staged
    assert _cgroup_tasks(rt, cid) == [staged]
    rt.stop_container(cid, 0)
    rt.remove_container(cid)
