"""The API server on a 3-member etcd: objects over HTTPS, two API servers sharing one etcd,
one member killed while serving, and the scheduler binding through it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from support.cluster import ControlPlane, Loop, free_ns, wait_for

from .etcdcluster import EtcdCluster


def etcd_control_plane(root: Path, datastore: str) -> ControlPlane:
    """A ControlPlane (tests/support/cluster.py): `kubeletpy control-plane --datastore etcd://...`."""
    root.mkdir()
    return ControlPlane(root, ["--datastore", datastore]).start()


@pytest.fixture
def cp_etcd(etcd_fresh: EtcdCluster, tmp_path: Path):  # type: ignore[no-untyped-def]
    c = etcd_control_plane(tmp_path / "a", etcd_fresh.url)
    yield c
    c.stop()


def test_objects_revisions_and_member_failure(cp_etcd: ControlPlane, etcd_fresh: EtcdCluster,
                                              tmp_path: Path) -> None:
    cp = cp_etcd
    ns = cp.namespace(free_ns())
    created = cp.pod(ns, "p0")
    rv0 = int(created["metadata"]["resourceVersion"])
    # a second API server on the same etcd (scale-out): same objects, same resourceVersions
    cp2 = etcd_control_plane(tmp_path / "b", etcd_fresh.url)
    try:
        assert cp2.get_pod(ns, "p0")["metadata"]["resourceVersion"] == str(rv0)
        # a watch on server 2 sees writes made through server 1
        events: list[dict] = []

        def watch() -> None:
            with cp2.api.get(cp2.url + f"/api/v1/namespaces/{ns}/pods", stream=True, timeout=60,
                             params={"watch": "1", "resourceVersion": str(rv0), "timeoutSeconds": "30"}) as r:
                for line in r.iter_lines():
                    if line:
                        events.append(json.loads(line))
                        if len(events) >= 20:
                            return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        time.sleep(0.3)
        for i in range(1, 11):
            cp.pod(ns, f"p{i}")
        # kill one etcd member while serving: the API keeps answering, the watch keeps flowing
        etcd_fresh.kill(1)
        for i in range(11, 21):
            cp.pod(ns, f"p{i}")
        names = {p["metadata"]["name"] for p in cp.req("GET", f"/api/v1/namespaces/{ns}/pods")["items"]}
        assert names == {f"p{i}" for i in range(21)}
        assert len(cp2.req("GET", f"/api/v1/namespaces/{ns}/pods")["items"]) == 21
        t.join(20)
        assert [e["type"] for e in events] == ["ADDED"] * 20
        got = [e["object"]["metadata"]["name"] for e in events[:20]]
        assert got == [f"p{i}" for i in range(1, 21)]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events[:20]]
        assert rvs == sorted(rvs) and rvs[0] > rv0
        # optimistic concurrency still holds through etcd
        pod = cp.get_pod(ns, "p1")
        pod["metadata"]["labels"] = {"x": "1"}
        cp.req("PUT", f"/api/v1/namespaces/{ns}/pods/p1", json=pod)
        r = cp.api.put(cp.url + f"/api/v1/namespaces/{ns}/pods/p1", json=pod, timeout=10)
        assert r.status_code == 409
    finally:
        cp2.stop()


def test_scheduler_binds_through_etcd_backed_api(cp_etcd: ControlPlane, etcd_fresh: EtcdCluster) -> None:
    from kubeletpy.scheduler import Scheduler

    cp = cp_etcd
    cp.node("n1", cpu="2")
    cp.node("n2", cpu="2")
    ns = cp.namespace(free_ns())
    loop = Loop()
    try:
        client = loop.client(cp)

        async def make() -> Scheduler:
            return Scheduler(client, initial_backoff=0.1, max_backoff=0.5)

        loop.spawn(loop.call(make()).run())
        for i in range(3):
            cp.pod(ns, f"p{i}", cpu="1")
        wait_for("3 bound", lambda: all(cp.get_pod(ns, f"p{i}")["spec"].get("nodeName") for i in range(3)))
        etcd_fresh.kill(0)
        cp.pod(ns, "p3", cpu="1")
        cp.pod(ns, "p4", cpu="1")
        node = wait_for("p3 bound", lambda: cp.get_pod(ns, "p3")["spec"].get("nodeName"), timeout=20)
        assert node in ("n1", "n2")
        msg = wait_for("p4 unschedulable", lambda: next(
            (c.get("message") for c in (cp.get_pod(ns, "p4").get("status") or {}).get("conditions") or []
             if c.get("type") == "PodScheduled" and c.get("status") == "False"), None), timeout=20)
        assert msg.startswith("0/2 nodes are available: 2 Insufficient cpu.")
    finally:
        loop.stop()
