"""cgroup v2 `memory` controller: memory.max, swap off, working set, oom_kill events."""

from __future__ import annotations

import os

from cri.cgroups.common import Resources, Stats, read_int, read_keyed, write


def apply(d: str, res: Resources) -> None:
    if res.memory_limit:
        write(f"{d}/memory.max", res.memory_limit)
    if res.disable_swap and os.path.exists(f"{d}/memory.swap.max"):
        write(f"{d}/memory.swap.max", 0)


def stats(d: str, st: Stats) -> None:
    usage = read_int(f"{d}/memory.current")
    inactive = read_keyed(f"{d}/memory.stat").get("inactive_file", 0)
    st.memory_usage_bytes = usage
    st.memory_working_set_bytes = max(0, usage - inactive)
    st.oom_kills = read_keyed(f"{d}/memory.events").get("oom_kill", 0)


def oom_file(d: str) -> str:
    return f"{d}/memory.events"
