"""Pure parts of the controllers: the CIDR allocator, taint reconciliation, Unknown marking,
eviction delays."""

from __future__ import annotations

import pytest

from kubeletpy.controllers.nodeipam import CIDRAllocator, CIDRExhaustedError
from kubeletpy.controllers.nodelifecycle import eviction_delay, mark_unknown, reconcile_taints

UNREACH = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"


def test_allocator_hands_out_distinct_blocks_and_rotates() -> None:
    a = CIDRAllocator("10.244.0.0/16")
    assert a.size == 256
    got = [a.allocate() for _ in range(3)]
    assert got == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    a.release("10.244.1.0/24")
    assert a.allocate() == "10.244.3.0/24"  # the released block is not reused at once
    assert a.used == 3


def test_allocator_occupies_existing_blocks_and_exhausts() -> None:
    a = CIDRAllocator("10.0.0.0/22", 24)
    assert a.occupy("10.0.0.0/24") and a.occupy("10.0.2.0/24")
    assert not a.occupy("192.168.0.0/24") and not a.occupy("10.0.1.0/25")
    assert sorted([a.allocate(), a.allocate()]) == ["10.0.1.0/24", "10.0.3.0/24"]
    with pytest.raises(CIDRExhaustedError):
        a.allocate()


def test_allocator_ipv6_and_bad_masks() -> None:
    a = CIDRAllocator("fd00:10:244::/56")
    assert a.allocate() == "fd00:10:244::/64"
    with pytest.raises(ValueError):
        CIDRAllocator("10.244.0.0/16", 8)
    with pytest.raises(ValueError):
        CIDRAllocator("10.244.0.1/16")


def test_reconcile_taints() -> None:
    now = "2026-01-01T00:00:00Z"
    other = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    new = reconcile_taints([other], "Unknown", now)
    assert new == [other, {"key": UNREACH, "effect": "NoSchedule"},
                   {"key": UNREACH, "effect": "NoExecute", "timeAdded": now}]
    assert reconcile_taints(new, "Unknown", "later") is None  # nothing to do, timeAdded kept
    flipped = reconcile_taints(new, "False", now)
    assert flipped is not None and {(t["key"], t["effect"]) for t in flipped} == {
        ("dedicated", "NoSchedule"), (NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")}
    assert reconcile_taints(flipped, "True", now) == [other]
    assert reconcile_taints([other], None, now) is None


def test_mark_unknown() -> None:
    node = {"metadata": {"creationTimestamp": "t0"}, "status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": "t1"},
        {"type": "MemoryPressure", "status": "False"}]}}
    assert mark_unknown(node, "t2")
    conds = {c["type"]: c for c in node["status"]["conditions"]}
    assert conds["Ready"] == {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                              "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": "t1",
                              "lastTransitionTime": "t2"}
    assert conds["DiskPressure"]["reason"] == "NodeStatusNeverUpdated"
    assert conds["DiskPressure"]["message"] == "Kubelet never posted node status."
    assert not mark_unknown(node, "t3")


def test_eviction_delay() -> None:
    taints = [{"key": UNREACH, "effect": "NoExecute"}]

    def pod(*tols: dict) -> dict:
        return {"spec": {"tolerations": list(tols)}}

    assert eviction_delay(pod(), taints) == 0
    assert eviction_delay(pod({"key": UNREACH, "operator": "Exists", "effect": "NoExecute",
                               "tolerationSeconds": 300}), taints) == 300
    assert eviction_delay(pod({"key": UNREACH, "operator": "Exists", "effect": "NoExecute"}), taints) is None
    assert eviction_delay(pod({"operator": "Exists"}), taints) is None
    assert eviction_delay(pod({"key": UNREACH, "operator": "Exists", "effect": "NoSchedule"}), taints) == 0
    two = taints + [{"key": "x", "value": "y", "effect": "NoExecute"}]
    assert eviction_delay(pod({"key": UNREACH, "operator": "Exists", "tolerationSeconds": 30}), two) == 0
    assert eviction_delay(pod({"key": UNREACH, "operator": "Exists", "tolerationSeconds": 30},
                              {"key": "x", "value": "y", "tolerationSeconds": 10}), two) == 10
    assert eviction_delay(pod({"key": UNREACH, "operator": "Exists", "tolerationSeconds": -5}), taints) == 0
