"""cgroup v2 `cpu` controller: cpu.weight from shares, cpu.max from quota/period."""

from __future__ import annotations

from cri.cgroups.common import DEFAULT_PERIOD_US, Resources, Stats, read_keyed, shares_to_weight, write


def apply(d: str, res: Resources) -> None:
    if res.cpu_shares:
        write(f"{d}/cpu.weight", shares_to_weight(res.cpu_shares))
    if res.cpu_quota or res.cpu_period:
        quota = str(res.cpu_quota) if res.cpu_quota > 0 else "max"
        write(f"{d}/cpu.max", f"{quota} {res.cpu_period or DEFAULT_PERIOD_US}")


def stats(d: str, st: Stats) -> None:
    s = read_keyed(f"{d}/cpu.stat")
    st.cpu_usage_ns = s.get("usage_usec", 0) * 1000
    st.cpu_nr_throttled = s.get("nr_throttled", 0)
