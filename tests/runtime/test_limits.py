"""cgroup limits really bite: OOM kill is reported, fork bombs stop, CPU quota throttles."""

from __future__ import annotations

import time

from cri.runtime import LinuxContainerResources, Runtime
from cri.runtime.types import LinuxContainerConfig

from .conftest import run, wait_exit


def _res(**kw: int) -> LinuxContainerConfig:
    return LinuxContainerConfig(resources=LinuxContainerResources(**kw))


def test_memory_hog_is_oom_killed(rt: Runtime, pod) -> None:
    sid = pod()
    cid = run(rt, sid, "hog", ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
              linux=_res(memory_limit_in_bytes=32 << 20))
    st = wait_exit(rt, cid)
    assert st.reason == "OOMKilled", st
    assert st.exit_code == 137


def test_fork_bomb_stops_at_pids_limit(rt: Runtime, pod) -> None:
    sid = pod()
    cid = run(rt, sid, "bomb", ["sh", "-c", "for i in $(seq 1 60); do sleep 30 & done; sleep 30"],
              linux=_res(pids_limit=16))
    mgr = rt._cg(rt._load_ctr(cid)["cgroup"])
    deadline = time.monotonic() + 10
    while "can't fork" not in open(rt.container_status(cid).log_path).read():
        assert time.monotonic() < deadline, "the shell never hit the pids limit"
        time.sleep(0.05)
    assert rt.container_stats(cid).pids <= 16
    events = dict(line.split() for line in open(f"{mgr.dirs['pids']}/pids.events"))
    assert int(events["max"]) > 0  # forks were refused by the pids controller


def test_cpu_quota_throttles_and_update(rt: Runtime, pod) -> None:
    sid = pod()
    cid = run(rt, sid, "spin", ["sh", "-c", "while :; do :; done"],
              linux=_res(cpu_quota=10_000, cpu_period=100_000, cpu_shares=256))
    deadline = time.monotonic() + 5
    while rt.container_stats(cid).cpu_nr_throttled == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    st = rt.container_stats(cid)
    assert st.cpu_nr_throttled > 0 and st.cpu_usage_core_nano_seconds > 0
    rec = rt._load_ctr(cid)
    mgr = rt._cg(rec["cgroup"])
    assert open(f"{mgr.dirs['cpu']}/cpu.cfs_quota_us").read().strip() == "10000"
    assert open(f"{mgr.dirs['cpu']}/cpu.shares").read().strip() == "256"
    rt.update_container_resources(cid, LinuxContainerResources(cpu_quota=50_000, cpu_period=100_000,
                                                               memory_limit_in_bytes=64 << 20))
    assert open(f"{mgr.dirs['cpu']}/cpu.cfs_quota_us").read().strip() == "50000"
    assert open(f"{mgr.dirs['memory']}/memory.limit_in_bytes").read().strip() == str(64 << 20)
    assert rt.container_status(cid).resources.cpu_quota == 50_000
    assert rt.container_stats(cid).memory_working_set_bytes > 0
    pod_stats = rt.pod_sandbox_stats(sid)
    assert pod_stats.pids >= 2 and pod_stats.cpu_usage_core_nano_seconds >= st.cpu_usage_core_nano_seconds
    assert [s.id for s in rt.list_container_stats(sid)] == [cid]
