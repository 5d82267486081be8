"""Taints and tolerations: NoSchedule/NoExecute taints filter, PreferNoSchedule ones score."""

from __future__ import annotations

from ..framework import NodeInfo, PodInfo, tolerated

NAME = "TaintToleration"
RESOLVABLE = False
WEIGHT = 3


def filter(pod: PodInfo, node: NodeInfo) -> list[str]:
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerated(pod.tolerations, taint):
            return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    return []


def score(pod: PodInfo, node: NodeInfo) -> int:
    """Raw score: how many PreferNoSchedule taints the pod does *not* tolerate (fewer is better)."""
    return sum(1 for t in node.taints if t.get("effect") == "PreferNoSchedule" and not tolerated(pod.tolerations, t))


def normalize(raw: list[int]) -> list[int]:
    top = max(raw, default=0)
    return [100 if top == 0 else 100 - r * 100 // top for r in raw]
