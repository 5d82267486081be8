"""Resource fit (filter) and the least-allocated / balanced-allocation scores.

Fit: for every resource the pod requests, allocatable - already requested on the node
must cover it; the pod count is a resource too ("Too many pods"). Scores use cpu and
memory with the non-zero defaults for containers that request nothing.
"""

from __future__ import annotations

from ..framework import NodeInfo, PodInfo

NAME = "NodeResourcesFit"
RESOLVABLE = True  # evicting lower-priority pods could free room


def filter(pod: PodInfo, node: NodeInfo) -> list[str]:
    reasons = []
    if len(node.pods) + 1 > node.allocatable.get("pods", 0):
        reasons.append("Too many pods")
    alloc, used = node.allocatable, node.requested
    for name, want in pod.requests.items():
        if name == "pods":
            continue
        if want > alloc.get(name, 0) - used.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def _fractions(pod: PodInfo, node: NodeInfo) -> tuple[float, float]:
    cap_cpu, cap_mem = node.allocatable.get("cpu", 0), node.allocatable.get("memory", 0)
    cpu = (node.nonzero_cpu + pod.nonzero[0]) / cap_cpu if cap_cpu else 1.0
    mem = (node.nonzero_mem + pod.nonzero[1]) / cap_mem if cap_mem else 1.0
    return min(cpu, 1.0), min(mem, 1.0)


def least_allocated(pod: PodInfo, node: NodeInfo) -> int:
    """0..100: the mean free share of cpu and memory after placing the pod (emptier is better)."""
    cpu, mem = _fractions(pod, node)
    return int(((1 - cpu) + (1 - mem)) * 50)


def balanced_allocation(pod: PodInfo, node: NodeInfo) -> int:
    """0..100: 100 when cpu and memory would be equally used (std dev of the two shares is 0)."""
    cpu, mem = _fractions(pod, node)
    return int((1 - abs(cpu - mem) / 2) * 100)
