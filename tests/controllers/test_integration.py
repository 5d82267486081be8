"""Node IPAM, node lifecycle + taint eviction, and leader election against a real API server."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from support.cluster import REPO, ControlPlane, Loop, free_ns, wait_for

from kubeletpy.controllers import LeaderElector
from kubeletpy.controllers.nodeipam import NodeIPAMController
from kubeletpy.controllers.nodelifecycle import NodeLifecycleController

LEASES = "/apis/coordination.k8s.io/v1/namespaces"


def start_ipam(cp: ControlPlane, loop: Loop, cidr: str, mask: int | None = None) -> Any:
    client = loop.client(cp, user_agent="kube-controller-manager")

    async def make() -> NodeIPAMController:
        return NodeIPAMController(client, cidr, mask)

    c = loop.call(make())
    fut = loop.spawn(c.run())
    return fut


def pod_cidr(cp: ControlPlane, name: str) -> str:
    return wait_for(f"{name} podCIDR", lambda: cp.get_node(name)["spec"].get("podCIDR"))


# ---------------------------------------------------------------- node IPAM

def test_pod_cidrs_allocated_released_and_survive_restart(cp: ControlPlane, loop: Loop) -> None:
    cp.node("pre")  # exists before the controller starts
    fut = start_ipam(cp, loop, "10.9.0.0/22")  # room for 4 nodes
    for n in ("a", "b"):
        cp.node(n)
    cidrs = {n: pod_cidr(cp, n) for n in ("pre", "a", "b")}
    assert len(set(cidrs.values())) == 3
    for c in cidrs.values():
        net = ipaddress.ip_network(c)
        assert net.prefixlen == 24 and net.subnet_of(ipaddress.ip_network("10.9.0.0/22"))
    assert cp.get_node("a")["spec"]["podCIDRs"] == [cidrs["a"]]
    # restart the controller (as a new leader would): it must re-learn the taken blocks from the Nodes
    fut.cancel()
    start_ipam(cp, loop, "10.9.0.0/22")
    cp.node("c")
    c = pod_cidr(cp, "c")
    assert c not in cidrs.values()
    # the range is now full; a fifth node waits until one is deleted, then gets the freed block
    cp.node("d")
    time.sleep(1.0)
    assert not cp.get_node("d")["spec"].get("podCIDR")
    cp.req("DELETE", "/api/v1/nodes/a")
    assert pod_cidr(cp, "d") == cidrs["a"]


# ---------------------------------------------------------------- node lifecycle and eviction

def _cond(node: dict, typ: str = "Ready") -> dict:
    return next((c for c in (node.get("status") or {}).get("conditions") or [] if c["type"] == typ), {})


def _taints(node: dict) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in (node.get("spec") or {}).get("taints") or []}


def test_lease_stops_unknown_taint_evict_and_recover(cp: ControlPlane, loop: Loop) -> None:
    ns = cp.namespace(free_ns())
    cp.node("alive")
    cp.node("dying")
    stop = threading.Event()

    def heartbeat() -> None:  # the agent on "alive" keeps renewing its Lease
        while not stop.wait(0.3):
            cp.renew_lease("alive")

    hb = threading.Thread(target=heartbeat, daemon=True)
    hb.start()
    unreach = "node.kubernetes.io/unreachable"
    cp.pod(ns, "no-toleration", nodeName="dying",
           tolerations=[{"key": unreach, "operator": "Exists", "effect": "NoSchedule"}])
    cp.pod(ns, "two-seconds", nodeName="dying",
           tolerations=[{"key": unreach, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}])
    cp.pod(ns, "forever", nodeName="dying",
           tolerations=[{"key": unreach, "operator": "Exists", "effect": "NoExecute"}])
    cp.pod(ns, "default-300", nodeName="dying")  # the API server's default toleration: 300 s
    cp.pod(ns, "elsewhere", nodeName="alive")
    client = loop.client(cp, user_agent="kube-controller-manager")

    async def make() -> NodeLifecycleController:
        return NodeLifecycleController(client, grace_period=1.5, monitor_period=0.2)

    nlc = loop.call(make())
    loop.spawn(nlc.run())
    try:
        node = wait_for("dying Unknown", lambda: (n := cp.get_node("dying")) and _cond(n).get("status") == "Unknown"
                        and n, timeout=10)
        ready = _cond(node)
        assert ready["reason"] == "NodeStatusUnknown" and ready["message"] == "Kubelet stopped posting node status."
        assert _cond(node, "MemoryPressure")["status"] == "Unknown"
        node = wait_for("taints", lambda: (n := cp.get_node("dying")) and {(unreach, "NoExecute"),
                                                                            (unreach, "NoSchedule")} <= _taints(n) and n)
        assert any(t.get("timeAdded") for t in node["spec"]["taints"] if t["effect"] == "NoExecute")
        # the untolerating pod goes at once, marked like Kubernetes marks it
        # (the node still exists, so the pod stays Terminating until its agent confirms: Kubernetes' behaviour)
        p = wait_for("no-toleration evicted", lambda: (p := cp.get_pod(ns, "no-toleration"))["metadata"].get(
            "deletionTimestamp") and p, timeout=5)
        dt = _cond(p, "DisruptionTarget")
        assert dt == {**dt, "status": "True", "reason": "DeletionByTaintManager",
                      "message": "Taint manager: deleting due to NoExecute taint"}
        ev = wait_for("eviction event", lambda: [e for e in cp.events(ns, "no-toleration")
                                                 if e["reason"] == "TaintManagerEviction"])
        assert ev[0]["message"] == f"Marking for deletion Pod {ns}/no-toleration"
        assert not cp.get_pod(ns, "two-seconds")["metadata"].get("deletionTimestamp")
        wait_for("two-seconds evicted", lambda: cp.get_pod(ns, "two-seconds")["metadata"].get("deletionTimestamp"),
                 timeout=6)
        for name in ("forever", "default-300", "elsewhere"):
            assert not cp.get_pod(ns, name)["metadata"].get("deletionTimestamp"), name
        alive = cp.get_node("alive")
        assert _cond(alive)["status"] == "True" and not _taints(alive)
        # the agent comes back: Lease renewed and Ready=True posted; the taints go away
        cp.renew_lease("dying")
        cp.set_ready("dying", "True", message="back")
        wait_for("taints removed", lambda: not _taints(cp.get_node("dying")), timeout=5)
        assert nlc.evictions == 2
    finally:
        stop.set()
        hb.join()


def test_node_that_never_reports_becomes_unknown(cp: ControlPlane, loop: Loop) -> None:
    cp.node("silent", ready=None, lease=False)
    client = loop.client(cp)

    async def make() -> NodeLifecycleController:
        return NodeLifecycleController(client, grace_period=0.5, monitor_period=0.2)

    loop.spawn(loop.call(make()).run())
    node = wait_for("Unknown", lambda: (n := cp.get_node("silent")) and _cond(n).get("status") == "Unknown" and n)
    assert _cond(node)["reason"] == "NodeStatusNeverUpdated"
    wait_for("unreachable taint", lambda: ("node.kubernetes.io/unreachable", "NoExecute") in _taints(
        cp.get_node("silent")))


# ---------------------------------------------------------------- leader election

def _lease(cp: ControlPlane, name: str) -> dict:
    return cp.req("GET", f"{LEASES}/kube-system/leases/{name}")


def test_leader_election_takeover_and_release(cp: ControlPlane, loop: Loop) -> None:
    client = loop.client(cp)
    leading: dict[str, int] = {"a": 0, "b": 0, "c": 0}

    async def make(ident: str, release: bool) -> LeaderElector:
        return LeaderElector(client, "test-lock", identity=ident, lease_duration=2.0, renew_deadline=1.5,
                             retry_period=0.2, release_on_cancel=release)

    def worker(ident: str) -> Any:
        async def work() -> None:
            leading[ident] += 1
            await asyncio.Event().wait()
        return work

    a = loop.call(make("a", False))
    fa = loop.spawn(a.run(worker("a")))
    wait_for("a leads", lambda: a.is_leader)
    b = loop.call(make("b", True))
    fb = loop.spawn(b.run(worker("b")))
    lease = _lease(cp, "test-lock")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 2
    assert lease["spec"]["renewTime"] and lease["spec"]["acquireTime"]
    wait_for("a renews", lambda: _lease(cp, "test-lock")["spec"]["renewTime"] != lease["spec"]["renewTime"])
    assert not b.is_leader
    # a "crashes" (no release): b takes over within the lease duration (+ a retry period)
    fa.cancel()
    t0 = time.monotonic()
    wait_for("b leads", lambda: b.is_leader, timeout=5)
    assert time.monotonic() - t0 < 2.0 + 1.0
    lease = _lease(cp, "test-lock")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    assert leading == {"a": 1, "b": 1, "c": 0}
    # b stops cleanly and releases: c takes over right away instead of waiting out the lease
    c = loop.call(make("c", True))
    loop.spawn(c.run(worker("c")))
    fb.cancel()
    t0 = time.monotonic()
    wait_for("c leads", lambda: c.is_leader, timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert _lease(cp, "test-lock")["spec"]["holderIdentity"] == "c"


def test_two_scheduler_processes_one_leader_and_failover(cp: ControlPlane) -> None:
    """Two `python -m kubeletpy.scheduler` processes: only the leader binds; SIGKILL it, the other takes over."""
    ns = cp.namespace(free_ns())
    cp.node("n1")
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        for ident in ("s1", "s2"):
            logs[ident] = open(cp.root / f"{ident}.log", "w")  # noqa: SIM115
            procs[ident] = subprocess.Popen(
                [sys.executable, "-m", "kubeletpy.scheduler", "--kubeconfig", str(cp.kubeconfig),
                 "--identity", ident, "--leader-elect-lease-duration", "2", "--leader-elect-renew-deadline", "1.5",
                 "--leader-elect-retry-period", "0.2"], stdout=logs[ident], stderr=logs[ident], cwd=str(REPO))
        leader = wait_for("a leader", lambda: (r := cp.api.get(cp.url + f"{LEASES}/kube-system/leases/kube-scheduler",
                                                                timeout=5)).ok and r.json()["spec"]["holderIdentity"])
        cp.pod(ns, "first")
        assert wait_for("first bound", lambda: cp.get_pod(ns, "first")["spec"].get("nodeName")) == "n1"
        procs[leader].kill()
        procs[leader].wait()
        other = "s2" if leader == "s1" else "s1"
        cp.pod(ns, "second")
        assert wait_for("second bound", lambda: cp.get_pod(ns, "second")["spec"].get("nodeName"), timeout=10) == "n1"
        assert _lease(cp, "kube-scheduler")["spec"]["holderIdentity"] == other
        ev = [e for e in cp.events(ns, "second") if e["reason"] == "Scheduled"]
        assert ev and ev[0]["reportingInstance"] == other
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        for f in logs.values():
            f.close()


def test_run_all_in_process(cp: ControlPlane, loop: Loop) -> None:
    """What the control-plane process runs: scheduler + controllers behind their leases, in one loop."""
    from kubeletpy.controllers import Options, run_all

    client = loop.client(cp, user_agent="kube-controller-manager")
    opts = Options(cluster_cidr="10.50.0.0/16", node_monitor_grace_period=1.0, node_monitor_period=0.2,
                   lease_duration=2.0, renew_deadline=1.5, retry_period=0.2, identity="cp-1",
                   scheduler_kw={"initial_backoff": 0.1, "max_backoff": 0.5})
    loop.spawn(run_all(client, opts))
    ns = cp.namespace(free_ns())
    cp.node("n1")
    assert pod_cidr(cp, "n1").startswith("10.50.")
    cp.pod(ns, "p")
    assert wait_for("bound", lambda: cp.get_pod(ns, "p")["spec"].get("nodeName")) == "n1"
    for lease in ("kube-scheduler", "kube-controller-manager"):
        assert _lease(cp, lease)["spec"]["holderIdentity"] == "cp-1"
    # n1's Lease is never renewed again: Unknown, tainted; the pod (default 300 s toleration) stays
    wait_for("n1 unreachable", lambda: ("node.kubernetes.io/unreachable", "NoExecute") in _taints(cp.get_node("n1")),
             timeout=10)
    assert not cp.get_pod(ns, "p")["metadata"].get("deletionTimestamp")
    # a new pod cannot go to the unreachable node, in Kubernetes' words
    cp.pod(ns, "q")
    msg = wait_for("q unschedulable", lambda: next(
        (c.get("message") for c in (cp.get_pod(ns, "q").get("status") or {}).get("conditions") or []
         if c.get("type") == "PodScheduled" and c.get("status") == "False"), None))
    assert msg.startswith("0/1 nodes are available: 1 node(s) had untolerated taint "
                          "{node.kubernetes.io/unreachable: }.")


def test_pods_of_a_deleted_node_are_garbage_collected(cp: ControlPlane, loop: Loop) -> None:
    ns = cp.namespace(free_ns())
    cp.node("gone")
    cp.pod(ns, "orphan", nodeName="gone")
    client = loop.client(cp)

    async def make() -> NodeLifecycleController:
        return NodeLifecycleController(client, grace_period=30, monitor_period=0.2, orphan_grace=0.5)

    loop.spawn(loop.call(make()).run())
    time.sleep(0.5)
    cp.req("DELETE", "/api/v1/nodes/gone")
    wait_for("orphan deleted", lambda: cp.api.get(cp.url + f"/api/v1/namespaces/{ns}/pods/orphan",
                                                  timeout=5).status_code == 404, timeout=10)


def test_standalone_entry_points_parse_flags() -> None:
    for mod in ("kubeletpy.scheduler", "kubeletpy.controllers"):
        out = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, timeout=30,
                             cwd=str(REPO))
        assert out.returncode == 0 and "--kubeconfig" in out.stdout and "--leader-elect" in out.stdout
    out = subprocess.run([sys.executable, "-m", "kubeletpy.controllers", "--help"], capture_output=True, text=True,
                         timeout=30, cwd=str(REPO))
    assert "--cluster-cidr" in out.stdout and "--node-monitor-grace-period" in out.stdout


def test_hook_inside_the_control_plane_process(tmp_path: Path, loop: Loop) -> None:
    """How the lead wires it: the API server (kubeletpy.controlplane.app) and run_in_control_plane
    on one event loop, the controllers reaching the server over HTTPS with the admin kubeconfig."""
    from kubeletpy.controllers import Options, run_in_control_plane
    from kubeletpy.controlplane.app import Config
    from kubeletpy.controlplane.app import ControlPlane as Server

    cfg = Config(listen="127.0.0.1:0", data_dir=tmp_path / "data", kubeconfig=tmp_path / "admin.kubeconfig")

    async def start() -> Server:
        s = Server(cfg)
        await s.start()
        return s

    server = loop.call(start())
    try:
        task = loop.spawn(run_in_control_plane(cfg.kubeconfig, Options(
            cluster_cidr="10.60.0.0/16", lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)))
        cp = ControlPlane(tmp_path)
        cp.connect()
        ns = cp.namespace(free_ns())
        cp.node("n1")
        cp.pod(ns, "p")
        assert wait_for("bound", lambda: cp.get_pod(ns, "p")["spec"].get("nodeName")) == "n1"
        assert pod_cidr(cp, "n1") == "10.60.0.0/24"
        task.cancel()
        # a clean stop releases both leases (empty holder) so a successor starts at once
        wait_for("released", lambda: all(not _lease(cp, n)["spec"].get("holderIdentity")
                                         for n in ("kube-scheduler", "kube-controller-manager")), timeout=5)
    finally:
        loop.call(server.stop())
