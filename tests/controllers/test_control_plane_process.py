"""`kubeletpy control-plane` runs the scheduler and controllers itself by default (behind
their leader Leases), so a cluster needs no separate scheduler or controller-manager."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from support.cluster import ControlPlane, free_ns, wait_for

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"


def test_control_plane_process_schedules_and_allocates(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path, ["--cluster-cidr", "10.99.0.0/16"],
                      command=[sys.executable, "-m", "kubeletpy", "control-plane"]).start()
    try:
        ns = cp.namespace(free_ns())
        cp.node("proc-n1")
        cidr = wait_for("a pod CIDR", lambda: cp.get_node("proc-n1")["spec"].get("podCIDR"))
        assert cidr.startswith("10.99.") and cidr.endswith("/24")
        cp.pod(ns, "p", cpu="100m")
        assert wait_for("binding", lambda: cp.get_pod(ns, "p")["spec"].get("nodeName")) == "proc-n1"
        holders = {item["metadata"]["name"]: item["spec"].get("holderIdentity")
                   for item in cp.req("GET", LEASES)["items"]}
        assert holders.get("kube-scheduler") and holders.get("kube-controller-manager"), holders
    finally:
        cp.stop()


def test_no_controllers_flag_leaves_pods_pending(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path).start()  # the harness passes --no-controllers
    try:
        ns = cp.namespace(free_ns())
        cp.node("bare-n1")
        cp.pod(ns, "p")
        time.sleep(1.0)  # time enough for an embedded scheduler to have bound it
        names = [i["metadata"]["name"] for i in cp.req("GET", LEASES)["items"]]
        assert "kube-scheduler" not in names
        assert not cp.get_pod(ns, "p")["spec"].get("nodeName")
        assert not cp.get_node("bare-n1")["spec"].get("podCIDR")
    finally:
        cp.stop()
