"""`spec.unschedulable` (kubectl cordon): no new pods unless they tolerate the unschedulable taint."""

from __future__ import annotations

from ..framework import TAINT_UNSCHEDULABLE, NodeInfo, PodInfo, tolerated

NAME = "NodeUnschedulable"
RESOLVABLE = False
REASON = "node(s) were unschedulable"


def filter(pod: PodInfo, node: NodeInfo) -> list[str]:
    if not ((node.node or {}).get("spec") or {}).get("unschedulable"):
        return []
    if tolerated(pod.tolerations, {"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}):
        return []
    return [REASON]
