"""A pod that names its node fits only there (normally such pods never reach the scheduler)."""

from __future__ import annotations

from ..framework import NodeInfo, PodInfo

NAME = "NodeName"
RESOLVABLE = False
REASON = "node(s) didn't match the requested node name"


def filter(pod: PodInfo, node: NodeInfo) -> list[str]:
    return [REASON] if pod.node_name and pod.node_name != node.name else []
