"""Node-level admission: does a new pod fit next to the pods already admitted?

Run once per pod, in arrival order, before anything is created; a rejected pod is failed
through the API (phase Failed with reason OutOfcpu / OutOfmemory / OutOfpods / NodePorts)
and never touches the runtime, like the kubelet's predicate admit handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeletpy.agent import qos


@dataclass(frozen=True)
class Allocatable:
    cpu_milli: int
    memory: int
    pods: int


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


def host_ports(pod: dict[str, Any]) -> set[tuple[str, str, int]]:
    """(protocol, hostIP, hostPort) the pod claims; hostNetwork pods claim their containerPorts."""
    spec = pod.get("spec") or {}
    host_net = bool(spec.get("hostNetwork"))
    out: set[tuple[str, str, int]] = set()
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            hp = p.get("hostPort") or (p.get("containerPort") if host_net else 0)
            if hp:
                out.add((p.get("protocol", "TCP"), p.get("hostIP") or "0.0.0.0", int(hp)))
    return out


def _ports_conflict(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    if a[0] != b[0] or a[2] != b[2]:
        return False
    return a[1] == b[1] or "0.0.0.0" in (a[1], b[1])


def admit(pod: dict[str, Any], admitted: list[dict[str, Any]], alloc: Allocatable,
          pressure: set[str] | None = None) -> Rejection | None:
    """None when the pod fits; otherwise why not (first failing check, kubelet order).

    Under node pressure (conditions from eviction.py) the kubelet admits nothing it would
    have to evict next: no BestEffort pod under MemoryPressure, no pod at all under disk or
    PID pressure; critical pods (static, system-critical priority) always.
    """
    from kubeletpy.agent.eviction import is_critical

    blocking = sorted(pressure or ())
    if blocking and not is_critical(pod) and (
            set(blocking) - {"MemoryPressure"} or qos.qos_class(pod) == "BestEffort"):
        return Rejection("Evicted", f"The node had condition: [{', '.join(blocking)}]. ")
    if len(admitted) + 1 > alloc.pods:
        return Rejection("OutOfpods", f"Node didn't have enough resource: pods, requested: 1, used: {len(admitted)}, "
                                      f"capacity: {alloc.pods}")
    cpu, mem = qos.pod_requests(pod)
    used_cpu = used_mem = 0
    for p in admitted:
        c, m = qos.pod_requests(p)
        used_cpu, used_mem = used_cpu + c, used_mem + m
    if cpu and used_cpu + cpu > alloc.cpu_milli:
        return Rejection("OutOfcpu", f"Node didn't have enough resource: cpu, requested: {cpu}, used: {used_cpu}, "
                                     f"capacity: {alloc.cpu_milli}")
    if mem and used_mem + mem > alloc.memory:
        return Rejection("OutOfmemory", f"Node didn't have enough resource: memory, requested: {mem}, used: "
                                        f"{used_mem}, capacity: {alloc.memory}")
    wanted = host_ports(pod)
    if wanted:
        taken = set().union(*(host_ports(p) for p in admitted)) if admitted else set()
        for w in wanted:
            if any(_ports_conflict(w, t) for t in taken):
                return Rejection("NodePorts", "Node didn't have free ports for the requested pod ports")
    return None
