"""Filters, scores, requests and the FailedScheduling message on plain dicts (no server)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from kubeletpy.apiclient.quantity import milli_value, parse_quantity, value
from kubeletpy.scheduler import core
from kubeletpy.scheduler.framework import NodeInfo, PodInfo, pod_requests, tolerates
from kubeletpy.scheduler.plugins import (
    node_affinity,
    node_name,
    node_ports,
    node_ready,
    node_resources,
    node_unschedulable,
    taint_toleration,
)


def node(name: str = "n1", cpu: str = "4", memory: str = "8Gi", pods: int = 110, labels: dict | None = None,
         taints: list | None = None, ready: str = "True", unschedulable: bool = False, **extra: str) -> dict:
    alloc = {"cpu": cpu, "memory": memory, "pods": str(pods), **extra}
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": ready}]}}


def pod(name: str = "p", cpu: str | None = None, memory: str | None = None, **spec: Any) -> dict:
    req = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": req}}], **spec}}


def ni(n: dict, *pods: dict) -> NodeInfo:
    return NodeInfo.of(n, list(pods))


def pi(p: dict) -> PodInfo:
    return PodInfo.of(p)


# ---------------------------------------------------------------- quantities and requests

@pytest.mark.parametrize("q,expected", [
    ("100m", Fraction(1, 10)), ("64Mi", 64 * 2**20), ("1e3", 1000), ("1.5Gi", 3 * 2**29), ("2", 2),
    ("0.5", Fraction(1, 2)), ("1k", 1000), ("1Ki", 1024), ("250u", Fraction(1, 4000)), ("1E2", 100), (3, 3),
    ("12e-1", Fraction(6, 5)), (".5", Fraction(1, 2)),
])
def test_parse_quantity(q: Any, expected: Any) -> None:
    assert parse_quantity(q) == expected


@pytest.mark.parametrize("bad", ["", "1.2.3", "Mi", "1mi", "1 Gi", "1Gb", True, None])
def test_parse_quantity_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_rounding_up() -> None:
    assert milli_value("0.1") == 100 and milli_value("1.0001") == 1001 and milli_value("1u") == 1
    assert value("1.5") == 2 and value("1Mi") == 2**20


def test_pod_requests_init_max_rule_sidecars_overhead_and_limits() -> None:
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                           {"resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "50Mi"}}},
                               {"resources": {"requests": {"memory": "1Gi"}}}]}
    assert pod_requests(spec) == {"cpu": 1000, "memory": 2**30}
    # a sidecar (init container restartPolicy Always) adds to the steady state and to later init steps
    spec2 = {"containers": [{"resources": {"requests": {"cpu": "500m"}}}],
             "initContainers": [{"restartPolicy": "Always", "resources": {"requests": {"cpu": "300m"}}},
                                {"resources": {"requests": {"cpu": "600m"}}}],
             "overhead": {"cpu": "50m"}}
    assert pod_requests(spec2) == {"cpu": max(500 + 300, 300 + 600) + 50}
    # a limit alone defaults the request
    assert pod_requests({"containers": [{"resources": {"limits": {"memory": "1Gi"}}}]}) == {"memory": 2**30}


# ---------------------------------------------------------------- filters

def test_resources_fit_and_messages() -> None:
    n = ni(node(cpu="2", memory="1Gi", pods=2), pod("a", cpu="1500m", memory="512Mi"))
    assert node_resources.filter(pi(pod(cpu="500m", memory="512Mi")), n) == []
    assert node_resources.filter(pi(pod(cpu="501m")), n) == ["Insufficient cpu"]
    assert node_resources.filter(pi(pod(cpu="1", memory="1Gi")), n) == ["Insufficient cpu", "Insufficient memory"]
    full = ni(node(pods=1), pod("a"))
    assert node_resources.filter(pi(pod()), full) == ["Too many pods"]
    gpu = ni(node(**{"example.com/gpu": "1"}))
    want = pod()
    want["spec"]["containers"][0]["resources"]["limits"] = {"example.com/gpu": "2"}
    assert node_resources.filter(pi(want), gpu) == ["Insufficient example.com/gpu"]


def test_init_container_max_rule_in_fit() -> None:
    n = ni(node(cpu="1"))
    p = pod(cpu="100m")
    p["spec"]["initContainers"] = [{"name": "i", "image": "x", "resources": {"requests": {"cpu": "1100m"}}}]
    assert node_resources.filter(pi(p), n) == ["Insufficient cpu"]
    p["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = "900m"
    assert node_resources.filter(pi(p), n) == []


def test_removing_a_pod_frees_its_resources_and_ports() -> None:
    a = pod("a", cpu="3")
    a["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    n = ni(node(cpu="4"), a)
    b = pod("b", cpu="2")
    b["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    assert node_resources.filter(pi(b), n) == ["Insufficient cpu"] and node_ports.filter(pi(b), n)
    n.remove_pod("default/a")
    assert node_resources.filter(pi(b), n) == [] and node_ports.filter(pi(b), n) == []


def test_unschedulable_node_and_its_toleration() -> None:
    n = ni(node(unschedulable=True))
    assert node_unschedulable.filter(pi(pod()), n) == ["node(s) were unschedulable"]
    tol = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                            "effect": "NoSchedule"}])
    assert node_unschedulable.filter(pi(tol), n) == []


def test_node_name() -> None:
    assert node_name.filter(pi(pod(nodeName="n2")), ni(node("n1"))) == [
        "node(s) didn't match the requested node name"]
    assert node_name.filter(pi(pod(nodeName="n1")), ni(node("n1"))) == []
    assert node_name.filter(pi(pod()), ni(node("n1"))) == []


def test_node_ready() -> None:
    assert node_ready.filter(pi(pod()), ni(node(ready="True"))) == []
    assert node_ready.filter(pi(pod()), ni(node(ready="False"))) == ["node(s) were not ready"]
    assert node_ready.filter(pi(pod()), ni(node(ready="Unknown"))) == ["node(s) were not ready"]
    no_conds = node()
    no_conds["status"]["conditions"] = []
    assert node_ready.filter(pi(pod()), ni(no_conds)) == ["node(s) were not ready"]
    ds = pod(tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}])
    assert node_ready.filter(pi(ds), ni(node(ready="False"))) == []


@pytest.mark.parametrize("tol,taint,ok", [
    ({"key": "k", "value": "v", "effect": "NoSchedule"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "operator": "Equal", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),
    ({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
    ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "anything", "effect": "NoSchedule"}, True),
    ({"operator": "Exists"}, {"key": "any", "effect": "NoExecute"}, True),
    ({"operator": "Exists", "effect": "NoSchedule"}, {"key": "any", "effect": "NoExecute"}, False),
    ({"key": "k", "value": "v", "effect": "NoExecute"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
    ({"key": "other", "operator": "Exists"}, {"key": "k", "effect": "NoSchedule"}, False),
    ({"key": "k"}, {"key": "k", "effect": "NoSchedule"}, True),  # Equal with empty values
])
def test_toleration_matching(tol: dict, taint: dict, ok: bool) -> None:
    assert tolerates(tol, taint) is ok


def test_taint_filter_message_and_prefer_no_schedule_score() -> None:
    tainted = ni(node(taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]))
    assert taint_toleration.filter(pi(pod()), tainted) == ["node(s) had untolerated taint {dedicated: gpu}"]
    empty_value = ni(node(taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoExecute"}]))
    assert taint_toleration.filter(pi(pod()), empty_value) == [
        "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
    tol = pod(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])
    assert taint_toleration.filter(pi(tol), tainted) == []
    soft = ni(node(taints=[{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]))
    assert taint_toleration.filter(pi(pod()), soft) == []
    raw = [taint_toleration.score(pi(pod()), n) for n in (ni(node()), soft)]
    assert raw == [0, 2] and taint_toleration.normalize(raw) == [100, 0]


def _aff(required: list | None = None, preferred: list | None = None) -> dict:
    na: dict[str, Any] = {}
    if required is not None:
        na["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": required}
    if preferred is not None:
        na["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return {"nodeAffinity": na}


@pytest.mark.parametrize("expr,labels,ok", [
    ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "b"}, True),
    ({"key": "zone", "operator": "In", "values": ["a"]}, {"zone": "b"}, False),
    ({"key": "zone", "operator": "In", "values": ["a"]}, {}, False),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "b"}, True),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
    ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "a"}, False),
    ({"key": "gpu", "operator": "Exists"}, {"gpu": ""}, True),
    ({"key": "gpu", "operator": "Exists"}, {}, False),
    ({"key": "gpu", "operator": "DoesNotExist"}, {}, True),
    ({"key": "gpu", "operator": "DoesNotExist"}, {"gpu": "1"}, False),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "16"}, True),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {"cores": "8"}, False),
    ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"cores": "4"}, True),
    ({"key": "cores", "operator": "Lt", "values": ["8"]}, {"cores": "x"}, False),
    ({"key": "cores", "operator": "Gt", "values": ["8"]}, {}, False),
])
def test_node_affinity_operators(expr: dict, labels: dict, ok: bool) -> None:
    p = pi(pod(affinity=_aff([{"matchExpressions": [expr]}])))
    assert (node_affinity.filter(p, ni(node(labels=labels))) == []) is ok


def test_node_affinity_terms_fields_and_selector() -> None:
    # terms are ORed, expressions ANDed
    terms = [{"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]},
             {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]}]
    p = pi(pod(affinity=_aff(terms)))
    assert node_affinity.filter(p, ni(node(labels={"a": "1", "b": "2"}))) == []
    assert node_affinity.filter(p, ni(node(labels={"a": "1"}))) == [
        "node(s) didn't match Pod's node affinity/selector"]
    assert node_affinity.filter(p, ni(node("special"))) == []
    # an empty term list or an empty term matches nothing
    assert node_affinity.filter(pi(pod(affinity=_aff([]))), ni(node())) != []
    assert node_affinity.filter(pi(pod(affinity=_aff([{}]))), ni(node())) != []
    # nodeSelector must match too
    sel = pi(pod(nodeSelector={"disk": "ssd"}, affinity=_aff([{"matchExpressions": [
        {"key": "zone", "operator": "Exists"}]}])))
    assert node_affinity.filter(sel, ni(node(labels={"disk": "ssd", "zone": "a"}))) == []
    assert node_affinity.filter(sel, ni(node(labels={"zone": "a"}))) != []
    assert node_affinity.filter(pi(pod(nodeSelector={"disk": "ssd"})), ni(node(labels={"disk": "hdd"}))) != []


def test_preferred_node_affinity_score() -> None:
    pref = [{"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 20, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}]
    p = pi(pod(affinity=_aff(preferred=pref)))
    nodes = [ni(node("x", labels={"zone": "a", "ssd": ""})), ni(node("y", labels={"zone": "a"})),
             ni(node("z", labels={"ssd": ""})), ni(node("w"))]
    raw = [node_affinity.score(p, n) for n in nodes]
    assert raw == [100, 80, 20, 0]
    assert node_affinity.normalize(raw) == [100, 80, 20, 0]
    assert core.schedule(p, nodes).node == "x"


def _with_port(p: dict, port: int, host_ip: str = "", proto: str = "TCP") -> dict:
    entry: dict[str, Any] = {"containerPort": 80, "hostPort": port, "protocol": proto}
    if host_ip:
        entry["hostIP"] = host_ip
    p["spec"]["containers"][0]["ports"] = [entry]
    return p


def test_host_ports() -> None:
    n = ni(node(), _with_port(pod("a"), 8080, "10.0.0.1"))
    bad = "node(s) didn't have free ports for the requested pod ports"
    assert node_ports.filter(pi(_with_port(pod(), 8080)), n) == [bad]  # wildcard vs specific IP
    assert node_ports.filter(pi(_with_port(pod(), 8080, "10.0.0.1")), n) == [bad]
    assert node_ports.filter(pi(_with_port(pod(), 8080, "10.0.0.2")), n) == []
    assert node_ports.filter(pi(_with_port(pod(), 8080, proto="UDP")), n) == []
    assert node_ports.filter(pi(_with_port(pod(), 8081)), n) == []
    wild = ni(node(), _with_port(pod("a"), 53, proto="UDP"))
    assert node_ports.filter(pi(_with_port(pod(), 53, "10.0.0.9", "UDP")), wild) == [bad]
    hostnet = pod(hostNetwork=True)
    hostnet["spec"]["containers"][0]["ports"] = [{"containerPort": 9100}]
    assert node_ports.filter(pi(hostnet), ni(node(), _with_port(pod("a"), 9100))) == [bad]


# ---------------------------------------------------------------- scores and the decision

def test_least_allocated_and_balanced_tiebreak() -> None:
    busy = ni(node("busy", cpu="4", memory="8Gi"), pod("a", cpu="3", memory="6Gi"))
    idle = ni(node("idle", cpu="4", memory="8Gi"))
    p = pi(pod(cpu="500m", memory="1Gi"))
    assert node_resources.least_allocated(p, idle) > node_resources.least_allocated(p, busy)
    assert core.schedule(p, [busy, idle]).node == "idle"
    # equal least-allocated totals, but one node would end up lopsided: balanced wins the tie
    lopsided = ni(node("lopsided", cpu="4", memory="8Gi"), pod("a", cpu="1500m", memory="1Gi"))
    even = ni(node("even", cpu="4", memory="8Gi"), pod("b", cpu="1", memory="2Gi"))
    q = pi(pod(cpu="1", memory="2Gi"))
    assert node_resources.least_allocated(q, lopsided) == node_resources.least_allocated(q, even)
    assert node_resources.balanced_allocation(q, even) > node_resources.balanced_allocation(q, lopsided)
    assert core.schedule(q, [lopsided, even]).node == "even"


def test_best_effort_pods_spread_by_nonzero_defaults() -> None:
    a = ni(node("a"), pod("x"), pod("y"))
    b = ni(node("b"), pod("z"))
    assert core.schedule(pi(pod()), [a, b]).node == "b"


def test_prefer_no_schedule_steers_away() -> None:
    soft = ni(node("soft", taints=[{"key": "spot", "effect": "PreferNoSchedule"}]))
    plain = ni(node("plain"), pod("a", cpu="1"))
    assert core.schedule(pi(pod()), [soft, plain]).node == "plain"


def test_fit_error_message_wording() -> None:
    nodes = [ni(node("a", memory="1Gi")), ni(node("b", memory="1Gi")),
             ni(node("c", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]))]
    r = core.schedule(pi(pod(memory="4Gi")), nodes)
    assert r.node is None
    assert r.message == ("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
                         "2 Insufficient memory. preemption: 0/3 nodes are available: 1 Preemption is not "
                         "helpful for scheduling, 2 No preemption victims found for incoming pod.")


def test_fit_error_counts_every_reason_and_sorts() -> None:
    nodes = [ni(node("a", cpu="1", memory="1Gi")), ni(node("b", labels={"x": "y"}, cpu="1", memory="1Gi")),
             ni(node("c", unschedulable=True)), ni(node("d", ready="False"))]
    r = core.schedule(pi(pod(cpu="2", memory="2Gi", nodeSelector={"x": "y"})), nodes)
    assert r.message == (
        "0/4 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 node(s) didn't match Pod's node "
        "affinity/selector, 1 node(s) were not ready, 1 node(s) were unschedulable. preemption: 0/4 nodes are "
        "available: 1 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling.")
    assert core.schedule(pi(pod()), []).message == "no nodes available to schedule pods"


def test_first_failing_filter_wins_per_node() -> None:
    n = ni(node("a", memory="1Gi", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]))
    r = core.schedule(pi(pod(memory="2Gi")), [n])
    assert r.failures == {"a": (["node(s) had untolerated taint {k: v}"], False)}


def test_schedule_picks_feasible_and_accepts_dicts() -> None:
    nodes = [ni(node("a", unschedulable=True)), ni(node("b"))]
    assert core.schedule(pod(), nodes).node == "b"


# ---------------------------------------------------------------- the queue

def test_queue_priority_fifo_backoff_and_parking() -> None:
    from kubeletpy.scheduler.queue import SchedulingQueue

    now = [100.0]
    q = SchedulingQueue(initial_backoff=1.0, max_backoff=4.0, unschedulable_timeout=60.0, clock=lambda: now[0])
    q.add("a")
    q.add("b")
    q.add("vip", priority=1000)
    q.add("a")  # already queued: no duplicate
    assert [q.pop_nowait(), q.pop_nowait(), q.pop_nowait(), q.pop_nowait()] == ["vip", "a", "b", None]
    # unschedulable pods wait for a cluster change, then honour their backoff (1, 2, 4, 4 s)
    q.park_unschedulable("a")
    assert q.pop_nowait() is None and q.parked() == {"a"}
    q.move_all_to_active()
    assert q.pop_nowait() is None
    now[0] += 1.0
    assert q.pop_nowait() == "a"
    for want in (2.0, 4.0, 4.0):
        q.park_unschedulable("a")
        q.move_all_to_active()
        now[0] += want - 0.01
        assert q.pop_nowait() is None
        now[0] += 0.01
        assert q.pop_nowait() == "a"
    # without any change, the periodic flush retries a parked pod after unschedulable_timeout
    q.park_unschedulable("b")
    now[0] += 59
    assert q.pop_nowait() is None
    now[0] += 1
    assert q.pop_nowait() == "b"
    # a deleted pod is forgotten wherever it was
    q.add("c")
    q.delete("c")
    q.requeue_backoff("d")
    q.delete("d")
    now[0] += 100
    assert q.pop_nowait() is None and len(q) == 0


def test_assumed_pod_without_confirmation_expires() -> None:
    """Assume-then-bind bookkeeping, without a server: an assumption whose bind succeeded but which the
    assigned-pods informer never confirmed is dropped after the TTL, freeing the node's resources."""
    import asyncio
    import time as _time

    from kubeletpy.scheduler import Scheduler

    async def go() -> None:
        s = Scheduler(client=None, identity="t")  # type: ignore[arg-type]  # no request is made
        s.assume_ttl = 0.3
        s._node_add(node("n1", cpu="1"))
        p = pod("x", cpu="1")
        s.assumed["default/x"] = "n1"
        s.nodes["n1"].add_pod(PodInfo.of(p))
        s._bound_at["default/x"] = _time.monotonic() - 1.0
        assert core.schedule(pi(pod("y", cpu="1")), s.nodes.values()).node is None
        task = asyncio.create_task(s._expire_assumed())
        await asyncio.sleep(0.2)
        task.cancel()
        assert "default/x" not in s.assumed and not s.nodes["n1"].pods
        assert core.schedule(pi(pod("y", cpu="1")), s.nodes.values()).node == "n1"

    asyncio.run(go())
