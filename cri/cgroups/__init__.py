"""cgroups behind one manager interface (after youki's libcgroups): v1 and v2, auto-detected.

    mgr = new_manager("kubeletpy/pod<uid>/<container-id>")
    mgr.create(); mgr.apply(Resources(memory_limit=64 << 20)); mgr.procs_files()
"""

from __future__ import annotations

import os

from cri.cgroups.common import (
    CgroupError,
    CgroupManager,
    Resources,
    Stats,
    milli_cpu_to_quota,
    milli_cpu_to_shares,
    shares_to_weight,
)
from cri.cgroups.v1 import V1Manager
from cri.cgroups.v2 import V2Manager

__all__ = ["CgroupError", "CgroupManager", "Resources", "Stats", "V1Manager", "V2Manager", "detect_version",
           "milli_cpu_to_quota", "milli_cpu_to_shares", "new_manager", "shares_to_weight"]


def detect_version(root: str = "/sys/fs/cgroup") -> int:
    """2 if `root` is a cgroup2 mount (unified), else 1 (legacy or hybrid, like this project's CI host)."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return 2
    return 1


def new_manager(path: str, root: str = "/sys/fs/cgroup", version: int | None = None) -> CgroupManager:
    v = version or detect_version(root)
    return V2Manager(path, root) if v == 2 else V1Manager(path, root)
