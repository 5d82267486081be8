"""cgroup v1: one hierarchy per controller (or a few co-mounted), same relative path in each."""

from __future__ import annotations

import functools
import os

from cri.cgroups.common import CgroupError, Resources, Stats, read_pids, rmdir_when_empty
from cri.cgroups.v1 import cpu, cpuacct, memory, pids

CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
_APPLY = {"cpu": cpu.apply, "memory": memory.apply, "pids": pids.apply}
_STATS = {"cpu": cpu.stats, "cpuacct": cpuacct.stats, "memory": memory.stats, "pids": pids.stats}


@functools.cache
def mountpoints(root: str = "/sys/fs/cgroup") -> dict[str, str]:
    """controller -> mount point, from mountinfo (handles co-mounted `cpu,cpuacct`)."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = post.split()
            if not fields or fields[0] != "cgroup":
                continue
            mp = pre.split()[4]
            if not mp.startswith(root):
                continue
            for opt in fields[2].split(","):
                if opt in CONTROLLERS:
                    out[opt] = mp
    return out


class V1Manager:
    version = 1

    def __init__(self, path: str, root: str = "/sys/fs/cgroup") -> None:
        self.path = path.strip("/")
        mps = mountpoints(root)
        missing = [c for c in CONTROLLERS if c not in mps]
        if missing:
            raise CgroupError(root, None, f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        self.dirs = {c: f"{mps[c]}/{self.path}" for c in CONTROLLERS}
        self._unique = list(dict.fromkeys(self.dirs.values()))

    def create(self) -> None:
        for d in self._unique:
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                raise CgroupError(d, None, e) from None

    def apply(self, res: Resources) -> None:
        res.validate()
        for ctrl, fn in _APPLY.items():
            fn(self.dirs[ctrl], res)

    def procs_files(self) -> list[str]:
        return [f"{d}/cgroup.procs" for d in self._unique]

    def join_files(self) -> list[str]:
        """Files a single-threaded process writes "0" to, to move itself in.

        `tasks` rather than `cgroup.procs`: moving only the calling thread lets
        the kernel skip the global threadgroup rwsem, whose RCU grace period
        otherwise costs 5-15 ms per container start on this kind of host.
        """
        return [f"{d}/tasks" for d in self._unique]

    def pids(self) -> list[int]:
        return read_pids(f"{self.dirs['pids']}/cgroup.procs")

    def stats(self) -> Stats:
        st = Stats()
        for ctrl, fn in _STATS.items():
            fn(self.dirs[ctrl], st)
        return st

    def oom_file(self) -> str:
        return memory.oom_file(self.dirs["memory"])

    def exists(self) -> bool:
        return os.path.isdir(self.dirs["memory"])

    def destroy(self, timeout: float = 5.0) -> None:
        for d in self._unique:
            rmdir_when_empty(d, timeout)
