"""The Node object: what this machine has, what it runs, and whether it is healthy.

Everything reported is measured, not configured: cpu count and memory from /proc, disk
from statvfs of the agent's root, pressure conditions from MemAvailable, free space and the
pid count, Ready from the runtime's own Status (RuntimeReady + NetworkReady), images from
CRI ListImages. `NodeStatusMaker.changed` ignores heartbeat times so the agent pushes only
real changes plus one report every `node_status_report` seconds.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from kubeletpy.agent import quantity
from kubeletpy.agent.config import AgentConfig

KUBELET_VERSION = "v1.31.0"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def arch() -> str:
    m = platform.machine()
    return _ARCH.get(m, m)


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[k] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def default_ip() -> str:
    """The source address the kernel picks for the default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.254", 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def pid_usage() -> tuple[int, int]:
    """(processes running, pid_max)."""
    running = sum(1 for d in os.listdir("/proc") if d.isdigit())
    try:
        pid_max = int(_read("/proc/sys/kernel/pid_max") or 32768)
    except ValueError:
        pid_max = 32768
    return running, pid_max


def fs_usage(path: Path) -> tuple[int, int]:
    """(capacity bytes, available bytes) of the filesystem holding `path`."""
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


class NodeStatusMaker:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.node_ip = cfg.node_ip or default_ip()
        self._last: dict[str, dict[str, Any]] = {}
        self.pressure: set[str] = set()  # conditions the eviction manager reports (eviction.py)

    def capacity(self) -> dict[str, str]:
        cap_disk, _ = fs_usage(self.cfg.root_dir)
        return {"cpu": str(cpu_count()), "memory": quantity.fmt_bytes(meminfo().get("MemTotal", 0)),
                "pods": str(self.cfg.max_pods), "ephemeral-storage": quantity.fmt_bytes(cap_disk // 1024 * 1024)}

    def allocatable_numbers(self) -> tuple[int, int, int]:
        """(milli-cpu, memory bytes, pods) that pods may request (capacity - reservations)."""
        cpu = cpu_count() * 1000 - self.cfg.system_reserved_cpu_milli
        total = meminfo().get("MemTotal", 0)
        th = self.cfg.eviction_hard.get("memory.available")
        mem = total - self.cfg.system_reserved_memory - int(th.minimum(total) if th else 0)
        return max(cpu, 0), max(mem, 0), self.cfg.max_pods

    def allocatable(self) -> dict[str, str]:
        cpu, mem, pods = self.allocatable_numbers()
        cap_disk, _ = fs_usage(self.cfg.root_dir)
        th = self.cfg.eviction_hard.get("nodefs.available")
        eph = int(cap_disk - (th.minimum(cap_disk) if th else 0))
        return {"cpu": quantity.fmt_milli(cpu), "memory": quantity.fmt_bytes(mem // 1024 * 1024), "pods": str(pods),
                "ephemeral-storage": str(eph)}

    def _cond(self, ctype: str, status: bool, reason: str, message: str, now: str) -> dict[str, Any]:
        s = "True" if status else "False"
        prev = self._last.get(ctype)
        ltt = prev["lastTransitionTime"] if prev and prev["status"] == s else now
        c = {"type": ctype, "status": s, "lastHeartbeatTime": now, "lastTransitionTime": ltt, "reason": reason,
             "message": message}
        self._last[ctype] = c
        return c

    def conditions(self, runtime_ready: bool, runtime_message: str, now: str) -> list[dict[str, Any]]:
        mem_p, disk_p, pid_p = (c in self.pressure for c in ("MemoryPressure", "DiskPressure", "PIDPressure"))
        return [
            self._cond("MemoryPressure", mem_p, "KubeletHasInsufficientMemory" if mem_p else
                       "KubeletHasSufficientMemory",
                       f"kubelet has {'insufficient' if mem_p else 'sufficient'} memory available", now),
            self._cond("DiskPressure", disk_p, "KubeletHasDiskPressure" if disk_p else "KubeletHasNoDiskPressure",
                       f"kubelet has {'' if disk_p else 'no '}disk pressure", now),
            self._cond("PIDPressure", pid_p, "KubeletHasInsufficientPID" if pid_p else "KubeletHasSufficientPID",
                       f"kubelet has {'insufficient' if pid_p else 'sufficient'} PID available", now),
            self._cond("Ready", runtime_ready, "KubeletReady" if runtime_ready else "KubeletNotReady",
                       "kubelet is posting ready status" if runtime_ready else runtime_message, now),
        ]

    def node_info(self, runtime: str) -> dict[str, str]:
        return {
            "machineID": _read("/etc/machine-id"), "systemUUID": _read("/sys/class/dmi/id/product_uuid"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"), "kernelVersion": platform.release(),
            "osImage": os_image(), "containerRuntimeVersion": runtime, "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch()}

    def addresses(self) -> list[dict[str, str]]:
        return [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.cfg.node_name}]

    def node_object(self) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": self.cfg.node_name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": arch(), "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch(),
                  **self.cfg.labels}
        return {"metadata": {"name": self.cfg.node_name, "labels": labels,
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {}}

    def status(self, runtime_version: str, runtime_ready: bool, runtime_message: str, images: list[Any],
               port: int, now: str) -> dict[str, Any]:
        imgs = sorted(images, key=lambda i: -int(i.size))[:50]
        return {
            "capacity": self.capacity(),
            "allocatable": self.allocatable(),
            "conditions": self.conditions(runtime_ready, runtime_message, now),
            "addresses": self.addresses(),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": self.node_info(runtime_version),
            "images": [{"names": list(i.repo_tags) + list(i.repo_digests), "sizeBytes": int(i.size)} for i in imgs],
        }


def without_heartbeats(status: dict[str, Any]) -> dict[str, Any]:
    """The status minus what changes on every measurement, for change detection."""
    out = dict(status)
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in status.get("conditions", [])]
    return out
