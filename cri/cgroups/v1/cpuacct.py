"""cgroup v1 `cpuacct` controller: CPU time used, for stats."""

from __future__ import annotations

from cri.cgroups.common import Stats, read_int


def stats(d: str, st: Stats) -> None:
    st.cpu_usage_ns = read_int(f"{d}/cpuacct.usage")
