"""cgroup v2: a single unified tree; controllers must be enabled top-down in subtree_control."""

from __future__ import annotations

import os

from cri.cgroups.common import CgroupError, Resources, Stats, read, read_pids, rmdir_when_empty, write
from cri.cgroups.v2 import cpu, memory, pids

CONTROLLERS = ("cpu", "memory", "pids")


class V2Manager:
    version = 2

    def __init__(self, path: str, root: str = "/sys/fs/cgroup") -> None:
        self.root = root.rstrip("/")
        self.path = path.strip("/")
        self.dir = f"{self.root}/{self.path}"

    def _enable_controllers(self) -> None:
        """Each ancestor must delegate cpu/memory/pids to its children before the leaf can use them."""
        available = set(read(f"{self.root}/cgroup.controllers").split())
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            raise CgroupError(f"{self.root}/cgroup.controllers", None,
                              f"cgroup v2 controllers not available: {', '.join(missing)}")
        d = self.root
        for part in self.path.split("/")[:-1] if self.path else []:
            self._delegate(d)
            d = f"{d}/{part}"
            os.makedirs(d, exist_ok=True)
        self._delegate(d)

    @staticmethod
    def _delegate(d: str) -> None:
        have = set(read(f"{d}/cgroup.subtree_control").split())
        want = " ".join(f"+{c}" for c in CONTROLLERS if c not in have)
        if want:
            write(f"{d}/cgroup.subtree_control", want)

    def create(self) -> None:
        self._enable_controllers()
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as e:
            raise CgroupError(self.dir, None, e) from None

    def apply(self, res: Resources) -> None:
        res.validate()
        cpu.apply(self.dir, res)
        memory.apply(self.dir, res)
        pids.apply(self.dir, res)

    def procs_files(self) -> list[str]:
        return [f"{self.dir}/cgroup.procs"]

    def join_files(self) -> list[str]:
        return self.procs_files()  # cgroup.threads only works for threaded cgroups

    def pids(self) -> list[int]:
        return read_pids(f"{self.dir}/cgroup.procs")

    def stats(self) -> Stats:
        st = Stats()
        cpu.stats(self.dir, st)
        memory.stats(self.dir, st)
        pids.stats(self.dir, st)
        return st

    def oom_file(self) -> str:
        return memory.oom_file(self.dir)

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def destroy(self, timeout: float = 5.0) -> None:
        rmdir_when_empty(self.dir, timeout)
