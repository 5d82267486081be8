"""What the filter and score plugins see: a pre-digested pod (`PodInfo`) and a node with
everything already bound or assumed on it (`NodeInfo`).

Digesting once is what keeps the scheduler fast: a pod's requests, host ports and
affinity are parsed when it is popped, a node's allocatable and running totals are kept
up to date as pods come and go, and every plugin call is arithmetic on small dicts.

Resource amounts are integers: cpu in millicores, everything else in base units (bytes,
pods, extended resources), rounded up from Kubernetes quantities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeletpy.apiclient import quantity
from kubeletpy.apiclient.resources import object_key

# What a container without requests counts as when *scoring* (never when filtering), as in
# Kubernetes: otherwise many best-effort pods would all pile onto one "empty" node.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

READY_TAINT_NOT_READY = "node.kubernetes.io/not-ready"
READY_TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


def _amount(name: str, qty: Any) -> int:
    return quantity.milli_value(qty) if name == "cpu" else quantity.value(qty)


def _container_requests(c: dict[str, Any]) -> dict[str, int]:
    res = c.get("resources") or {}
    req = dict(res.get("limits") or {})  # a limit without a request defaults the request (API defaulting)
    req.update(res.get("requests") or {})
    out: dict[str, int] = {}
    for name, qty in req.items():
        try:
            out[name] = _amount(name, qty)
        except ValueError:
            continue
    return out


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def _max(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        if v > into.get(k, 0):
            into[k] = v


def pod_requests(spec: dict[str, Any]) -> dict[str, int]:
    """The effective request of a pod, Kubernetes' rule:

    max(sum(app containers) + sum(sidecars), max over init containers of (that init
    container + the sidecars started before it)) + pod overhead. Sidecars are init
    containers with restartPolicy Always: they keep running next to the app containers.
    """
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add(total, _container_requests(c))
    sidecars: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        req = _container_requests(c)
        if c.get("restartPolicy") == "Always":
            _add(sidecars, req)
            _max(init_max, sidecars)
        else:
            step = dict(sidecars)
            _add(step, req)
            _max(init_max, step)
    _add(total, sidecars)
    _max(total, init_max)
    for name, qty in (spec.get("overhead") or {}).items():
        try:
            _add(total, {name: _amount(name, qty)})
        except ValueError:
            continue
    return {k: v for k, v in total.items() if v > 0}


def _nonzero(spec: dict[str, Any]) -> tuple[int, int]:
    cpu = mem = 0
    for c in (spec.get("containers") or []) + [i for i in spec.get("initContainers") or []
                                               if i.get("restartPolicy") == "Always"]:
        r = _container_requests(c)
        cpu += r.get("cpu") or DEFAULT_MILLI_CPU_REQUEST
        mem += r.get("memory") or DEFAULT_MEMORY_REQUEST
    return cpu, mem


def host_ports(spec: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(hostIP, protocol, hostPort) the pod wants; hostNetwork pods claim their container ports."""
    out = []
    host_net = bool(spec.get("hostNetwork"))
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            port = p.get("hostPort") or (p.get("containerPort") if host_net else 0)
            if port:
                out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(port)))
    return out


@dataclass(slots=True)
class PodInfo:
    pod: dict[str, Any]
    key: str
    requests: dict[str, int]
    nonzero: tuple[int, int]
    ports: list[tuple[str, str, int]]
    tolerations: list[dict[str, Any]]
    node_selector: dict[str, str]
    required_terms: list[dict[str, Any]] | None  # None: no required node affinity
    preferred_terms: list[dict[str, Any]]
    node_name: str
    priority: int

    @classmethod
    def of(cls, pod: dict[str, Any]) -> PodInfo:
        spec = pod.get("spec") or {}
        na = ((spec.get("affinity") or {}).get("nodeAffinity")) or {}
        req = na.get("requiredDuringSchedulingIgnoredDuringExecution")
        return cls(pod=pod, key=object_key(pod), requests=pod_requests(spec), nonzero=_nonzero(spec),
                   ports=host_ports(spec), tolerations=list(spec.get("tolerations") or []),
                   node_selector=dict(spec.get("nodeSelector") or {}),
                   required_terms=None if req is None else list(req.get("nodeSelectorTerms") or []),
                   preferred_terms=list(na.get("preferredDuringSchedulingIgnoredDuringExecution") or []),
                   node_name=spec.get("nodeName") or "", priority=int(spec.get("priority") or 0))


def node_allocatable(node: dict[str, Any]) -> dict[str, int]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    out: dict[str, int] = {}
    for name, qty in alloc.items():
        try:
            out[name] = _amount(name, qty)
        except ValueError:
            continue
    return out


@dataclass(slots=True)
class NodeInfo:
    """A node plus the totals of the pods bound (or assumed) to it."""

    name: str
    node: dict[str, Any] | None = None
    allocatable: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)
    requested: dict[str, int] = field(default_factory=dict)
    nonzero_cpu: int = 0
    nonzero_mem: int = 0
    pods: dict[str, PodInfo] = field(default_factory=dict)
    ports: dict[tuple[str, int], set[str]] = field(default_factory=dict)  # (proto, port) -> host IPs
    generation: int = 0

    @classmethod
    def of(cls, node: dict[str, Any], pods: list[dict[str, Any]] = ()) -> NodeInfo:  # type: ignore[assignment]
        ni = cls(name=(node.get("metadata") or {}).get("name", ""))
        ni.set_node(node)
        for p in pods:
            ni.add_pod(PodInfo.of(p))
        return ni

    def set_node(self, node: dict[str, Any]) -> None:
        self.node = node
        self.allocatable = node_allocatable(node)
        self.labels = dict((node.get("metadata") or {}).get("labels") or {})
        self.taints = list((node.get("spec") or {}).get("taints") or [])
        self.generation += 1

    def add_pod(self, pi: PodInfo) -> None:
        if pi.key in self.pods:
            self.remove_pod(pi.key)
        self.pods[pi.key] = pi
        _add(self.requested, pi.requests)
        self.nonzero_cpu += pi.nonzero[0]
        self.nonzero_mem += pi.nonzero[1]
        for ip, proto, port in pi.ports:
            self.ports.setdefault((proto, port), set()).add(ip)
        self.generation += 1

    def remove_pod(self, key: str) -> PodInfo | None:
        pi = self.pods.pop(key, None)
        if pi is None:
            return None
        for k, v in pi.requests.items():
            self.requested[k] = self.requested.get(k, 0) - v
        self.nonzero_cpu -= pi.nonzero[0]
        self.nonzero_mem -= pi.nonzero[1]
        self.ports = {}
        for other in self.pods.values():
            for ip, proto, port in other.ports:
                self.ports.setdefault((proto, port), set()).add(ip)
        self.generation += 1
        return pi


def tolerates(tol: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Does one toleration match one taint (key, operator Equal/Exists, value, effect)?"""
    effect = tol.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = tol.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = tol.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return bool(key) and (tol.get("value") or "") == (taint.get("value") or "")
    return False


def tolerated(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    return any(tolerates(t, taint) for t in tolerations)
