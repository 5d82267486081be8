"""cgroup v1 `pids` controller: the fork-bomb guard."""

from __future__ import annotations

from cri.cgroups.common import Resources, Stats, read_int, write


def apply(d: str, res: Resources) -> None:
    if res.pids_limit:
        write(f"{d}/pids.max", res.pids_limit)


def stats(d: str, st: Stats) -> None:
    st.pids = read_int(f"{d}/pids.current")
