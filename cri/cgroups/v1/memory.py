"""cgroup v1 `memory` controller: limit with swap off, working set, OOM-kill count."""

from __future__ import annotations

import os

from cri.cgroups.common import CgroupError, Resources, Stats, read_int, read_keyed, write


def apply(d: str, res: Resources) -> None:
    if not res.memory_limit:
        return
    limit = res.memory_limit
    memsw = f"{d}/memory.memsw.limit_in_bytes"
    has_memsw = res.disable_swap and os.path.exists(memsw)
    # The kernel insists memory.limit <= memsw.limit at every step, so the
    # order depends on whether we are raising or lowering.
    try:
        write(f"{d}/memory.limit_in_bytes", limit)
        if has_memsw:
            write(memsw, limit)
    except CgroupError:
        if not has_memsw:
            raise
        write(memsw, limit)
        write(f"{d}/memory.limit_in_bytes", limit)
    if res.disable_swap:
        try:
            write(f"{d}/memory.swappiness", 0)
        except CgroupError:
            pass  # not writable on some kernels when use_hierarchy is shared; swap is capped by memsw anyway


def stats(d: str, st: Stats) -> None:
    usage = read_int(f"{d}/memory.usage_in_bytes")
    inactive = read_keyed(f"{d}/memory.stat").get("total_inactive_file", 0)
    st.memory_usage_bytes = usage
    st.memory_working_set_bytes = max(0, usage - inactive)  # what the kubelet evicts on
    st.oom_kills = read_keyed(f"{d}/memory.oom_control").get("oom_kill", 0)


def oom_file(d: str) -> str:
    return f"{d}/memory.oom_control"
