"""One scheduling decision, as pure functions over PodInfo/NodeInfo (unit-testable on dicts).

`schedule(pod, nodes)` runs the filters in order on every node (a node stops at its first
failing filter, as in Kubernetes), scores the survivors and picks the best, or explains
why none fit in the exact words of Kubernetes' FitError:

    0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient memory.
    preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling,
    2 No preemption victims found for incoming pod.

(one line in reality). This scheduler never preempts, so nodes that failed for a reason
eviction could fix (resources, ports) say "No preemption victims found for incoming pod"
and the rest "Preemption is not helpful for scheduling".
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .framework import NodeInfo, PodInfo
from .plugins import (
    node_affinity,
    node_name,
    node_ports,
    node_ready,
    node_resources,
    node_unschedulable,
    taint_toleration,
)

# Kubernetes' default order, with our NodeReady check after the taints (see node_ready).
FILTERS = (node_unschedulable, node_name, taint_toleration, node_ready, node_affinity, node_ports, node_resources)
NO_VICTIMS = "No preemption victims found for incoming pod"
NOT_HELPFUL = "Preemption is not helpful for scheduling"


@dataclass(slots=True)
class Result:
    node: str | None
    message: str = ""
    # node name -> (reasons, resolvable by preemption)
    failures: dict[str, tuple[list[str], bool]] = field(default_factory=dict)
    feasible: int = 0


def run_filters(pod: PodInfo, node: NodeInfo) -> tuple[list[str], bool]:
    """([], _) when the node fits; else the first failing filter's reasons and whether preemption could help."""
    for f in FILTERS:
        reasons = f.filter(pod, node)
        if reasons:
            return reasons, f.RESOLVABLE
    return [], True


def _histogram(lines: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for r in lines:
        counts[r] = counts.get(r, 0) + 1
    return ", ".join(sorted(f"{n} {r}" for r, n in counts.items()))


def fit_error_message(num_nodes: int, failures: dict[str, tuple[list[str], bool]]) -> str:
    """The FailedScheduling message for a pod no node could take."""
    if num_nodes == 0:
        return "no nodes available to schedule pods"
    msg = f"0/{num_nodes} nodes are available"
    reasons = _histogram(r for rs, _ in failures.values() for r in rs)
    if reasons:
        msg += f": {reasons}."
    else:
        msg += "."
    pre = _histogram(NO_VICTIMS if resolvable else NOT_HELPFUL for _, resolvable in failures.values())
    return f"{msg} preemption: 0/{num_nodes} nodes are available: {pre}."


def scores(pod: PodInfo, feasible: list[NodeInfo]) -> list[tuple[int, int]]:
    """(total, balanced) per feasible node: least-allocated + 3*taint + 2*affinity; balanced breaks ties."""
    taint = taint_toleration.normalize([taint_toleration.score(pod, n) for n in feasible])
    aff = node_affinity.normalize([node_affinity.score(pod, n) for n in feasible]) if pod.preferred_terms else [
        0] * len(feasible)
    out = []
    for i, n in enumerate(feasible):
        total = (node_resources.least_allocated(pod, n) + taint_toleration.WEIGHT * taint[i]
                 + node_affinity.WEIGHT * aff[i])
        out.append((total, node_resources.balanced_allocation(pod, n)))
    return out


def schedule(pod: PodInfo | dict[str, Any], nodes: Iterable[NodeInfo], rng: random.Random | None = None) -> Result:
    pi = pod if isinstance(pod, PodInfo) else PodInfo.of(pod)
    feasible: list[NodeInfo] = []
    failures: dict[str, tuple[list[str], bool]] = {}
    count = 0
    for n in nodes:
        if n.node is None:
            continue
        count += 1
        reasons, resolvable = run_filters(pi, n)
        if reasons:
            failures[n.name] = (reasons, resolvable)
        else:
            feasible.append(n)
    if not feasible:
        return Result(None, fit_error_message(count, failures), failures)
    if len(feasible) == 1:
        return Result(feasible[0].name, failures=failures, feasible=1)
    sc = scores(pi, feasible)
    best = max(sc)
    top = [n for n, s in zip(feasible, sc, strict=True) if s == best]
    pick = top[0] if len(top) == 1 else (rng or random).choice(top)
    return Result(pick.name, failures=failures, feasible=len(feasible))
