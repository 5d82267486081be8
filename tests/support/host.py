"""Unused pod subnets, and removing what a private runtime's pods left on the host.

Every helper acts only on the names it is given (a bridge, a subnet, a cgroup parent, a base
dir), which the callers make unique: other engineers run tests on this host at the same time."""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path


def sh(cmd: str, check: bool = False) -> str:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True).stdout


def free_subnet(taken: set[str] | None = None) -> str:
    """A random 10.249.x.0/24 that no route on this host uses; it is added to `taken` (and not one from it)."""
    routes = sh("ip -4 route show table all")
    while True:
        net = f"10.249.{random.randint(0, 255)}.0/24"
        if net.rsplit(".", 1)[0] + "." not in routes and (taken is None or net not in taken):
            if taken is not None:
                taken.add(net)
            return net


def remove_nat_rules(subnet: str) -> None:
    """Delete the iptables NAT rules and the `inet kubeletpy_cni` nft chains that mention `subnet`."""
    prefix = subnet.rsplit(".", 1)[0] + "."
    for _ in range(3):
        for rule in [x for x in sh("iptables-save -t nat").splitlines() if x.startswith("-A ") and prefix in x]:
            subprocess.run(["iptables", "-w", "-t", "nat", "-D", *shlex.split(rule)[1:]], capture_output=True)
    chain = None
    for line in sh("nft -a list table inet kubeletpy_cni 2>/dev/null").splitlines():
        s = line.strip()
        if s.startswith("chain "):
            chain = s.split()[1]
        elif prefix in s and chain:
            sh(f"nft flush chain inet kubeletpy_cni {chain}; nft delete chain inet kubeletpy_cni {chain}")


def remove_cgroup(name: str) -> None:
    """Remove the cgroup `name` (relative to the hierarchy roots) and everything below it, in every hierarchy."""
    for ctrl in os.listdir("/sys/fs/cgroup"):
        d = f"/sys/fs/cgroup/{ctrl}/{name}"
        if os.path.isdir(d) and not os.path.islink(f"/sys/fs/cgroup/{ctrl}"):
            for sub, dirs, _ in os.walk(d, topdown=False):
                for x in dirs:
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(sub, x))
            with contextlib.suppress(OSError):
                os.rmdir(d)


def unmount_under(base: Path, also: Iterable[str] = ()) -> None:
    """Lazily unmount, innermost first, every mount below `base` and every one whose path contains one of `also`."""
    also = tuple(also)
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        mp = line.split()[4]
        if mp.startswith(str(base)) or any(a in mp for a in also):
            subprocess.run(["umount", "-l", mp], capture_output=True)


def clean_host(*, base: Path, bridge: str, subnet: str, cgroup_parent: str) -> None:
    """Remove what a private runtime and its pods left: its bridge, the NAT rules of its subnet, the
    cgroups under its parent, the mounts below its base dir, and the base dir."""
    sh(f"ip link del {bridge}")
    remove_nat_rules(subnet)
    remove_cgroup(cgroup_parent)
    unmount_under(base)
    shutil.rmtree(base, ignore_errors=True)
