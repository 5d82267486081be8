"""Only nodes whose Ready condition is True take new pods.

Runs after the taint filter: once the node lifecycle controller has tainted a node
not-ready/unreachable the message names the taint, as Kubernetes' does; this filter
covers the window before that (the agent just reported NotReady). A pod that tolerates
the not-ready NoSchedule taint (DaemonSet-style) is let through.
"""

from __future__ import annotations

from ..framework import READY_TAINT_NOT_READY, NodeInfo, PodInfo, tolerated

NAME = "NodeReady"
RESOLVABLE = False
REASON = "node(s) were not ready"


def is_ready(node: dict) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def filter(pod: PodInfo, node: NodeInfo) -> list[str]:
    if node.node is not None and is_ready(node.node):
        return []
    if tolerated(pod.tolerations, {"key": READY_TAINT_NOT_READY, "effect": "NoSchedule"}):
        return []
    return [REASON]
