"""Container resources -> the numbers CRI wants (the kubelet's conversion).

cpu requests become cgroup cpu.shares (1024 per core, at least 2), cpu limits become a
CFS quota over a 100 ms period (at least 1 ms), memory limits become the memory limit,
and the QoS class picks the OOM score adjustment so the kernel kills BestEffort first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeletpy.agent import quantity
from kubeletpy.agent.qos import BESTEFFORT, GUARANTEED

MIN_SHARES = 2
SHARES_PER_CPU = 1024
QUOTA_PERIOD = 100_000  # microseconds
MIN_QUOTA = 1000


@dataclass(frozen=True)
class LinuxResources:
    cpu_shares: int
    cpu_quota: int = 0
    cpu_period: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0


def milli_to_shares(milli: int) -> int:
    if milli <= 0:
        return MIN_SHARES
    return max(MIN_SHARES, milli * SHARES_PER_CPU // 1000)


def milli_to_quota(milli: int, period: int = QUOTA_PERIOD) -> int:
    if milli <= 0:
        return 0
    return max(MIN_QUOTA, milli * period // 1000)


def oom_score_adj(qos: str, memory_request: int, memory_capacity: int) -> int:
    if qos == GUARANTEED:
        return -997
    if qos == BESTEFFORT:
        return 1000
    if memory_capacity <= 0:
        return 999
    adj = 1000 - (1000 * memory_request) // memory_capacity
    return min(999, max(2, adj))


def container_resources(c: dict[str, Any], qos: str, memory_capacity: int) -> LinuxResources:
    res = c.get("resources") or {}
    limits = res.get("limits") or {}
    requests = {**limits, **(res.get("requests") or {})}
    cpu_req = quantity.milli(requests.get("cpu"))
    cpu_lim = quantity.milli(limits.get("cpu"))
    mem_lim = quantity.value(limits.get("memory"))
    mem_req = quantity.value(requests.get("memory"))
    quota = milli_to_quota(cpu_lim)
    return LinuxResources(
        cpu_shares=milli_to_shares(cpu_req),
        cpu_quota=quota,
        cpu_period=QUOTA_PERIOD if quota else 0,
        memory_limit_in_bytes=mem_lim,
        oom_score_adj=oom_score_adj(qos, mem_req, memory_capacity),
    )


def pod_resources(cpu_request: int, cpu_limit: int | None, mem_limit: int | None) -> LinuxResources:
    """Limits for the pod cgroup: the sum of what its containers may use."""
    quota = milli_to_quota(cpu_limit or 0)
    return LinuxResources(
        cpu_shares=milli_to_shares(cpu_request),
        cpu_quota=quota,
        cpu_period=QUOTA_PERIOD if quota else 0,
        memory_limit_in_bytes=mem_limit or 0,
    )
