"""Host ports: two pods cannot bind the same protocol/port on the same (or a wildcard) host IP."""

from __future__ import annotations

from ..framework import NodeInfo, PodInfo

NAME = "NodePorts"
RESOLVABLE = True
REASON = "node(s) didn't have free ports for the requested pod ports"
WILDCARD = "0.0.0.0"


def conflicts(want: list[tuple[str, str, int]], used: dict[tuple[str, int], set[str]]) -> bool:
    for ip, proto, port in want:
        ips = used.get((proto, port))
        if ips and (ip == WILDCARD or WILDCARD in ips or ip in ips):
            return True
    return False


def filter(pod: PodInfo, node: NodeInfo) -> list[str]:
    return [REASON] if pod.ports and conflicts(pod.ports, node.ports) else []
