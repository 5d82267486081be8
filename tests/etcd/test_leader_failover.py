"""Two full `kubeletpy control-plane` processes (API server + scheduler + controllers behind
leader-election Leases) on one 3-member etcd: shared credentials, cross-server watches, and
"kill the leader control plane -- another takes over scheduling"."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from support.cluster import ControlPlane, free_ns, wait_for

from .etcdcluster import EtcdCluster

LEASE_DURATION = 4.0  # --leader-elect-lease-duration for both processes
MARGIN = 10.0         # survivor notices the expiry (+ retry period), starts its informers and binds
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"


def full_control_plane(root: Path, datastore: str) -> ControlPlane:
    """`kubeletpy control-plane` with its scheduler and controllers ON (the default), short leases."""
    return ControlPlane(root, ["--datastore", datastore, "--leader-elect-lease-duration", str(LEASE_DURATION),
                               "--leader-elect-renew-deadline", "3", "--leader-elect-retry-period", "0.5"],
                        command=[sys.executable, "-m", "kubeletpy", "control-plane"])


def holder(cp: ControlPlane, lease: str) -> str:
    r = cp.api.get(cp.url + f"{LEASES}/{lease}", timeout=10)
    return ((r.json().get("spec") or {}).get("holderIdentity") or "") if r.status_code == 200 else ""


def pid_of(identity: str) -> int:
    """Leader identities are `<hostname>_<pid>_<random>`."""
    return int(identity.rsplit("_", 2)[1])


def watch_into(cp: ControlPlane, path: str, rv: str, events: list[dict[str, Any]], want: int) -> threading.Thread:
    def run() -> None:
        with cp.api.get(cp.url + path, stream=True, timeout=30,
                        params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "20"}) as r:
            for line in r.iter_lines():
                if line:
                    events.append(json.loads(line))
                    if len(events) >= want:
                        return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_kill_leader_control_plane_another_takes_over_scheduling(etcd: EtcdCluster, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = full_control_plane(tmp_path / "a", etcd.url).start()
    b: ControlPlane | None = None
    try:
        # the second server gets a copy of the first's data dir (same CA, same token hashes) and keeps
        # the admin kubeconfig's token, as an operator adding an API server would
        shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")
        shutil.copy(a.kubeconfig, tmp_path / "b" / "admin.kubeconfig")
        b = full_control_plane(tmp_path / "b", etcd.url).start()
        assert a.url != b.url
        # b's admin token works on both servers, verified against the one CA
        for server in (a, b):
            s = requests.Session()
            s.trust_env = False
            s.verify = str(tmp_path / "b" / "ca.crt")
            s.headers["Authorization"] = b.api.headers["Authorization"]
            r = s.get(server.url + "/api/v1/namespaces/kube-system", timeout=10)
            assert r.status_code == 200, (server.url, r.text)
        assert (tmp_path / "a" / "ca.crt").read_bytes() == (tmp_path / "b" / "ca.crt").read_bytes()

        # a write through one server is seen by a watch on the other, both ways
        ns = a.namespace(free_ns("fo"))
        for src, dst in ((a, b), (b, a)):
            rv = dst.req("GET", f"/api/v1/namespaces/{ns}/configmaps")["metadata"]["resourceVersion"]
            events: list[dict[str, Any]] = []
            t = watch_into(dst, f"/api/v1/namespaces/{ns}/configmaps", rv, events, 1)
            time.sleep(0.3)
            name = f"from-{'a' if src is a else 'b'}"
            made = src.req("POST", f"/api/v1/namespaces/{ns}/configmaps",
                           json={"metadata": {"name": name}, "data": {"k": "v"}})
            t.join(15)
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", name)]
            assert events[0]["object"]["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]

        # exactly one of the two processes holds the scheduler's Lease
        ident = wait_for("kube-scheduler lease held", lambda: holder(a, "kube-scheduler"), timeout=20)
        pids = {a.proc.pid: a, b.proc.pid: b}  # type: ignore[union-attr]
        assert pid_of(ident) in pids, (ident, list(pids))
        leader = pids[pid_of(ident)]
        survivor = b if leader is a else a
        # kill -9: no clean release of the Lease; the survivor must wait for it to expire
        leader.proc.kill()  # type: ignore[union-attr]
        leader.proc.wait()  # type: ignore[union-attr]
        killed_at = time.monotonic()
        survivor.node("n1", cpu="2")
        survivor.pod(ns, "after-failover", cpu="100m")
        node = wait_for("pod bound by the survivor",
                        lambda: survivor.get_pod(ns, "after-failover")["spec"].get("nodeName"),
                        timeout=LEASE_DURATION + MARGIN)
        took = time.monotonic() - killed_at
        assert node == "n1"
        assert took <= LEASE_DURATION + MARGIN
        print(f"failover: pod bound {took:.1f}s after kill -9 of the leader")
        new = holder(survivor, "kube-scheduler")
        assert new and new != ident and pid_of(new) == survivor.proc.pid  # type: ignore[union-attr]
        ev = wait_for("Scheduled event", lambda: [e for e in survivor.events(ns, "after-failover")
                                                   if e["reason"] == "Scheduled"])
        assert "n1" in ev[0]["message"]
    finally:
        a.stop()
        if b is not None:
            b.stop()
