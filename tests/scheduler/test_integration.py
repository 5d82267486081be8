"""The scheduler against a real API server over HTTPS, with simulated Nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.cluster import ControlPlane, Loop, free_ns, wait_for
from support.process import free_port

from kubeletpy.scheduler import Scheduler


def start_scheduler(cp: ControlPlane, loop: Loop, **kw: Any) -> Scheduler:
    kw.setdefault("initial_backoff", 0.1)
    kw.setdefault("max_backoff", 0.5)
    kw.setdefault("unschedulable_timeout", 5.0)

    client = loop.client(cp, user_agent="kube-scheduler")

    async def make() -> Scheduler:
        return Scheduler(client, **kw)

    s = loop.call(make())
    loop.spawn(s.run())
    return s


def node_of(cp: ControlPlane, ns: str, name: str, timeout: float = 15) -> str:
    return wait_for(f"{ns}/{name} bound", lambda: (cp.get_pod(ns, name).get("spec") or {}).get("nodeName"), timeout)


def test_binds_by_resources_and_reports_unschedulable(cp: ControlPlane, loop: Loop) -> None:
    cp.node("small", cpu="1", memory="1Gi")
    cp.node("big", cpu="8", memory="16Gi")
    ns = cp.namespace(free_ns())
    start_scheduler(cp, loop)
    cp.pod(ns, "needs-big", cpu="2", memory="4Gi")
    assert node_of(cp, ns, "needs-big") == "big"
    cp.pod(ns, "too-big", memory="64Gi")
    msg = wait_for("unschedulable condition", lambda: next(
        (c.get("message") for c in (cp.get_pod(ns, "too-big").get("status") or {}).get("conditions") or []
         if c.get("type") == "PodScheduled" and c.get("status") == "False"), None))
    assert msg == ("0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are available: "
                   "2 No preemption victims found for incoming pod.")
    cond = next(c for c in cp.get_pod(ns, "too-big")["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["reason"] == "Unschedulable"
    ev = wait_for("FailedScheduling event", lambda: [e for e in cp.events(ns, "too-big")
                                                      if e["reason"] == "FailedScheduling"])
    assert ev[0]["type"] == "Warning" and ev[0]["message"] == msg
    assert ev[0]["source"]["component"] == "default-scheduler"
    ok = wait_for("Scheduled event", lambda: [e for e in cp.events(ns, "needs-big") if e["reason"] == "Scheduled"])
    assert ok[0]["message"] == f"Successfully assigned {ns}/needs-big to big"
    # A bigger node appears: the parked pod is retried at once and lands there.
    cp.node("huge", cpu="16", memory="128Gi")
    assert node_of(cp, ns, "too-big") == "huge"


def _pod_scheduled_message(cp: ControlPlane, ns: str, name: str) -> str | None:
    return next((c.get("message") for c in (cp.get_pod(ns, name).get("status") or {}).get("conditions") or []
                 if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)


def test_selectors_taints_affinity_and_ports(cp: ControlPlane, loop: Loop) -> None:
    cp.node("ssd", labels={"disk": "ssd", "zone": "a", "cores": "16"})
    cp.node("hdd", labels={"disk": "hdd", "zone": "b", "cores": "4"})
    cp.node("gpu", labels={"zone": "c"}, taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    ns = cp.namespace(free_ns())
    start_scheduler(cp, loop)
    cp.pod(ns, "sel", nodeSelector={"disk": "ssd"})
    cp.pod(ns, "tol", nodeSelector={"zone": "c"},
           tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])
    cp.pod(ns, "aff", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}]}}})
    cp.pod(ns, "by-name", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["ssd"]}]}]}}})
    cp.pod(ns, "pref", affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}})
    assert node_of(cp, ns, "sel") == "ssd"
    assert node_of(cp, ns, "tol") == "gpu"
    assert node_of(cp, ns, "aff") == "hdd"
    assert node_of(cp, ns, "by-name") == "ssd"
    assert node_of(cp, ns, "pref") == "hdd"
    # the tainted node is never used by pods that do not tolerate it
    cp.pod(ns, "untolerated", nodeSelector={"zone": "c"})
    msg = wait_for("untolerated message", lambda: _pod_scheduled_message(cp, ns, "untolerated"))
    assert msg == ("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't "
                   "match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not "
                   "helpful for scheduling.")
    # host ports: two pods want 8080 on the ssd node; the second cannot go there
    port = [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]
    for name in ("web1", "web2"):
        body = {"metadata": {"name": name}, "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [
            {"name": "c", "image": "busybox:1.36", "ports": port}]}}
        cp.req("POST", f"/api/v1/namespaces/{ns}/pods", json=body)
    first = node_of(cp, ns, "web1")
    assert first == "ssd"
    msg = wait_for("port conflict", lambda: _pod_scheduled_message(cp, ns, "web2"))
    assert "1 node(s) didn't have free ports for the requested pod ports" in msg
    # deleting the first frees the port; the second is retried and bound
    cp.req("DELETE", f"/api/v1/namespaces/{ns}/pods/web1", json={"gracePeriodSeconds": 0})
    assert node_of(cp, ns, "web2") == "ssd"


def test_capacity_is_accounted_across_a_burst(cp: ControlPlane, loop: Loop) -> None:
    """Assume-then-bind: 10 pods of 1 cpu on two 4-cpu nodes, created at once, n2 capped at 3 pods: 7 fit, 3 wait."""
    cp.node("n1", cpu="4", pods=110)
    cp.node("n2", cpu="4", pods=3)
    ns = cp.namespace(free_ns())
    for i in range(10):
        cp.pod(ns, f"p{i}", cpu="1")
    s = start_scheduler(cp, loop)
    wait_for("7 bound", lambda: s.bound >= 7, timeout=15)
    wait_for("settled", lambda: len([p for p in cp.req("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
                                     if p["spec"].get("nodeName")]) == 7)
    pods = cp.req("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
    per_node: dict[str, int] = {}
    for p in pods:
        if p["spec"].get("nodeName"):
            per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
    assert per_node == {"n1": 4, "n2": 3}  # n2 holds only 3 pods
    pending = [p["metadata"]["name"] for p in pods if not p["spec"].get("nodeName")]
    assert len(pending) == 3
    msg = wait_for("message", lambda: _pod_scheduled_message(cp, ns, pending[0]))
    assert msg.startswith("0/2 nodes are available: 1 Insufficient cpu, 1 Too many pods.")


def test_ignores_bound_other_scheduler_and_gated_pods(cp: ControlPlane, loop: Loop) -> None:
    cp.node("n1")
    cp.node("n2", unschedulable=True)
    ns = cp.namespace(free_ns())
    s = start_scheduler(cp, loop)
    cp.pod(ns, "preset", nodeName="n2")
    cp.pod(ns, "other", schedulerName="my-scheduler")
    cp.pod(ns, "normal")
    assert node_of(cp, ns, "normal") == "n1"
    assert cp.get_pod(ns, "preset")["spec"]["nodeName"] == "n2"
    assert not cp.get_pod(ns, "other")["spec"].get("nodeName")
    assert s.bound == 1


def test_not_ready_node_and_readiness_change_retries(cp: ControlPlane, loop: Loop) -> None:
    cp.node("n1", ready="False")
    ns = cp.namespace(free_ns())
    start_scheduler(cp, loop)
    cp.pod(ns, "p")
    msg = wait_for("not ready message", lambda: _pod_scheduled_message(cp, ns, "p"))
    assert msg.startswith("0/1 nodes are available: 1 node(s) were not ready.")
    cp.set_ready("n1", "True")
    assert node_of(cp, ns, "p") == "n1"


def test_survives_api_server_restart(tmp_path: Path, loop: Loop) -> None:
    """Informers reconnect and resume from their resourceVersion; the scheduler keeps binding."""
    port = free_port()
    cp = ControlPlane(tmp_path, listen=f"127.0.0.1:{port}").start()
    try:
        cp.node("n1")
        ns = cp.namespace(free_ns())
        s = start_scheduler(cp, loop)
        cp.pod(ns, "before")
        assert node_of(cp, ns, "before") == "n1"
        cp.stop()
        cp.start()
        cp.pod(ns, "after")
        assert node_of(cp, ns, "after", timeout=20) == "n1"
        assert s.pending.relists == 0 and s.assigned.relists == 0  # resumed, not re-listed
    finally:
        cp.stop()
