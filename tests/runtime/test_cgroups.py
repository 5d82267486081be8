"""cgroup managers. v2 runs against a fake tree in tmp: this CI host's cgroup2 mount has no controllers."""

from __future__ import annotations

import os
import secrets

import pytest

from cri.cgroups import (
    CgroupError,
    Resources,
    V1Manager,
    V2Manager,
    detect_version,
    milli_cpu_to_quota,
    milli_cpu_to_shares,
    new_manager,
    shares_to_weight,
)


def test_conversions_match_kubernetes() -> None:
    assert milli_cpu_to_shares(0) == 2 and milli_cpu_to_shares(250) == 256 and milli_cpu_to_shares(1000) == 1024
    assert milli_cpu_to_quota(500) == 50_000 and milli_cpu_to_quota(1) == 1000
    assert shares_to_weight(2) == 1 and shares_to_weight(1024) == 39 and shares_to_weight(262144) == 10000


def test_validation_rejects_negative_values() -> None:
    for bad in (Resources(memory_limit=-1), Resources(cpu_quota=-2), Resources(pids_limit=-3),
                Resources(cpu_period=10)):
        with pytest.raises(ValueError):
            bad.validate()


def _fake_v2(tmp_path) -> str:  # type: ignore[no-untyped-def]
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return str(root)


def _kernel_files(d: str) -> None:
    """What the kernel would create in a new v2 cgroup (writable files empty: plain files don't truncate)."""
    for name, content in {"cgroup.procs": "", "cgroup.subtree_control": "", "cpu.weight": "",
                          "cpu.max": "", "memory.max": "", "memory.swap.max": "", "pids.max": "", "memory.current": "8192", "pids.current": "3",
                          "memory.stat": "anon 4096\ninactive_file 4096\n", "memory.events": "oom 1\noom_kill 1\n",
                          "cpu.stat": "usage_usec 1500\nnr_throttled 4\n"}.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(content)


def test_v2_manager_on_a_fake_tree(tmp_path) -> None:
    root = _fake_v2(tmp_path)
    assert detect_version(root) == 2
    os.makedirs(f"{root}/kubeletpy/podA")
    for d in (f"{root}/kubeletpy", f"{root}/kubeletpy/podA"):
        _kernel_files(d)
    mgr = new_manager("kubeletpy/podA/ctr", root)
    assert isinstance(mgr, V2Manager)
    mgr.create()
    _kernel_files(mgr.dir)
    mgr.apply(Resources(cpu_shares=1024, cpu_quota=50_000, cpu_period=100_000, memory_limit=32 << 20,
                        pids_limit=42))
    read = lambda n: open(os.path.join(mgr.dir, n)).read()  # noqa: E731
    assert (read("cpu.weight"), read("cpu.max"), read("memory.max"), read("memory.swap.max"),
            read("pids.max")) == ("39", "50000 100000", str(32 << 20), "0", "42")
    for d in (root, f"{root}/kubeletpy", f"{root}/kubeletpy/podA"):
        assert open(f"{d}/cgroup.subtree_control").read() == "+cpu +memory +pids"
    st = mgr.stats()
    assert (st.cpu_usage_ns, st.memory_working_set_bytes, st.pids, st.oom_kills, st.cpu_nr_throttled) == \
        (1_500_000, 4096, 3, 1, 4)
    assert mgr.procs_files() == [f"{mgr.dir}/cgroup.procs"] and mgr.oom_file().endswith("memory.events")
    open(os.path.join(mgr.dir, "cpu.max"), "w").close()
    mgr.apply(Resources(cpu_quota=-1, cpu_period=100_000))
    assert read("cpu.max") == "max 100000"
    for name in os.listdir(mgr.dir):
        os.unlink(os.path.join(mgr.dir, name))
    mgr.destroy()
    assert not mgr.exists()


def test_v2_missing_controller_is_a_clear_error(tmp_path) -> None:
    root = _fake_v2(tmp_path)
    with open(f"{root}/cgroup.controllers", "w") as f:
        f.write("cpu io\n")
    with pytest.raises(CgroupError, match="not available: memory, pids"):
        V2Manager("x/y", root).create()


@pytest.mark.skipif(detect_version() != 1, reason="this host runs cgroup v1")
def test_v1_manager_real(tmp_path) -> None:
    name = f"kubeletpy-test-{secrets.token_hex(4)}/unit"
    mgr = new_manager(name)
    assert isinstance(mgr, V1Manager)
    mgr.create()
    try:
        mgr.apply(Resources(cpu_shares=512, cpu_quota=20_000, cpu_period=100_000, memory_limit=64 << 20,
                            pids_limit=7))
        assert open(f"{mgr.dirs['memory']}/memory.limit_in_bytes").read().strip() == str(64 << 20)
        assert open(f"{mgr.dirs['memory']}/memory.memsw.limit_in_bytes").read().strip() == str(64 << 20)
        mgr.apply(Resources(memory_limit=128 << 20))  # raising needs memsw first: order handled
        assert open(f"{mgr.dirs['memory']}/memory.limit_in_bytes").read().strip() == str(128 << 20)
        assert open(f"{mgr.dirs['pids']}/pids.max").read().strip() == "7"
        with pytest.raises(CgroupError) as exc:
            from cri.cgroups.common import write
            write(f"{mgr.dirs['cpu']}/cpu.shares", "not-a-number")
        assert exc.value.path.endswith("cpu.shares") and exc.value.value == "not-a-number"
    finally:
        mgr.destroy()
        for d in {os.path.dirname(d) for d in mgr.dirs.values()}:
            os.rmdir(d)
