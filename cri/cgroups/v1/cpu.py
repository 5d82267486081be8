"""cgroup v1 `cpu` controller: shares from requests, CFS quota/period from limits."""

from __future__ import annotations

from cri.cgroups.common import Resources, Stats, read_keyed, write


def apply(d: str, res: Resources) -> None:
    if res.cpu_shares:
        write(f"{d}/cpu.shares", res.cpu_shares)
    if res.cpu_period:
        write(f"{d}/cpu.cfs_period_us", res.cpu_period)
    if res.cpu_quota:
        write(f"{d}/cpu.cfs_quota_us", res.cpu_quota if res.cpu_quota > 0 else -1)


def stats(d: str, st: Stats) -> None:
    st.cpu_nr_throttled = read_keyed(f"{d}/cpu.stat").get("nr_throttled", 0)
