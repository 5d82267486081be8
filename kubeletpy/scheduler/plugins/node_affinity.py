"""nodeSelector and node affinity (required terms filter, preferred terms score).

Required: the node must match `nodeSelector` (every label) and at least one of the
`nodeSelectorTerms`; a term matches when all its matchExpressions (on labels) and
matchFields (only `metadata.name`) do. An empty term matches nothing, like Kubernetes.
"""

from __future__ import annotations

from typing import Any

from ..framework import NodeInfo, PodInfo

NAME = "NodeAffinity"
RESOLVABLE = False
WEIGHT = 2
REASON = "node(s) didn't match Pod's node affinity/selector"


def _int(s: Any) -> int | None:
    try:
        return int(str(s))
    except ValueError:
        return None


def match_requirement(req: dict[str, Any], values: dict[str, str]) -> bool:
    key, op, want = req.get("key", ""), req.get("operator", ""), list(req.get("values") or [])
    have = values.get(key)
    if op == "In":
        return have is not None and have in want
    if op == "NotIn":
        return have is None or have not in want
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt"):
        if have is None or len(want) != 1:
            return False
        a, b = _int(have), _int(want[0])
        if a is None or b is None:
            return False
        return a > b if op == "Gt" else a < b
    return False


def match_term(term: dict[str, Any], labels: dict[str, str], name: str) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    if not all(match_requirement(r, labels) for r in exprs):
        return False
    return all(r.get("key") == "metadata.name" and match_requirement(r, {"metadata.name": name}) for r in fields)


def matches(pod: PodInfo, labels: dict[str, str], name: str) -> bool:
    for k, v in pod.node_selector.items():
        if labels.get(k) != v:
            return False
    if pod.required_terms is None:
        return True
    return any(match_term(t, labels, name) for t in pod.required_terms)


def filter(pod: PodInfo, node: NodeInfo) -> list[str]:
    return [] if matches(pod, node.labels, node.name) else [REASON]


def score(pod: PodInfo, node: NodeInfo) -> int:
    """Raw score: the sum of the weights of the preferred terms this node matches."""
    total = 0
    for pref in pod.preferred_terms:
        w = int(pref.get("weight") or 0)
        if w and match_term(pref.get("preference") or {}, node.labels, node.name):
            total += w
    return total


def normalize(raw: list[int]) -> list[int]:
    top = max(raw, default=0)
    return [0 if top == 0 else r * 100 // top for r in raw]
