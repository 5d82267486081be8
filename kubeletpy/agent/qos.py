"""QoS class, effective pod requests and the pod cgroup path.

Rules follow Kubernetes: Guaranteed when every container has cpu and memory limits equal to
requests (requests default to limits); BestEffort when nobody asks for anything; Burstable
otherwise. Init containers count for the class too. The pod's effective request is
max(sum of containers, largest init container) per resource, which is what admission uses.
"""

from __future__ import annotations

import os
from typing import Any

from kubeletpy.agent import quantity

GUARANTEED, BURSTABLE, BESTEFFORT = "Guaranteed", "Burstable", "BestEffort"
_TRACKED = ("cpu", "memory")


def _requests_limits(c: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    res = c.get("resources") or {}
    limits = dict(res.get("limits") or {})
    requests = dict(res.get("requests") or {})
    for k, v in limits.items():  # the API server defaults requests to limits
        requests.setdefault(k, v)
    return requests, limits


def qos_class(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        req, lim = _requests_limits(c)
        for r in _TRACKED:
            if quantity.parse(req.get(r)) > 0 or quantity.parse(lim.get(r)) > 0:
                any_set = True
            if r not in lim or quantity.parse(req.get(r)) != quantity.parse(lim.get(r)) or quantity.parse(
                    lim.get(r)) == 0:
                guaranteed = False
    if not any_set:
        return BESTEFFORT
    return GUARANTEED if guaranteed else BURSTABLE


def container_requests(c: dict[str, Any]) -> tuple[int, int]:
    """(milli-cpu, memory bytes) the container requests."""
    req, _ = _requests_limits(c)
    return quantity.milli(req.get("cpu")), quantity.value(req.get("memory"))


def pod_requests(pod: dict[str, Any]) -> tuple[int, int]:
    """(milli-cpu, memory bytes): max(sum(containers), max(init containers)) per resource."""
    spec = pod.get("spec") or {}
    cpu = mem = 0
    for c in spec.get("containers") or []:
        c_cpu, c_mem = container_requests(c)
        cpu, mem = cpu + c_cpu, mem + c_mem
    for c in spec.get("initContainers") or []:
        c_cpu, c_mem = container_requests(c)
        cpu, mem = max(cpu, c_cpu), max(mem, c_mem)
    return cpu, mem


def pod_limits(pod: dict[str, Any]) -> tuple[int | None, int | None]:
    """(milli-cpu, memory bytes) the pod as a whole may use; None = unbounded (a container
    without a limit makes the pod unbounded for that resource)."""
    spec = pod.get("spec") or {}
    cpu: int | None = 0
    mem: int | None = 0
    for c in spec.get("containers") or []:
        _, lim = _requests_limits(c)
        cpu = None if cpu is None or "cpu" not in lim else cpu + quantity.milli(lim["cpu"])
        mem = None if mem is None or "memory" not in lim else mem + quantity.value(lim["memory"])
    for c in spec.get("initContainers") or []:
        _, lim = _requests_limits(c)
        if cpu is not None:
            cpu = None if "cpu" not in lim else max(cpu, quantity.milli(lim["cpu"]))
        if mem is not None:
            mem = None if "memory" not in lim else max(mem, quantity.value(lim["memory"]))
    return cpu, mem


def pod_cgroup_parent(pod: dict[str, Any], root: str = "kubepods") -> str:
    """The cgroupfs-driver layout of the kubelet: /kubepods/pod<uid> for Guaranteed,
    /kubepods/<qos>/pod<uid> otherwise."""
    uid = (pod.get("metadata") or {}).get("uid", "")
    q = qos_class(pod)
    base = "/" + root.strip("/")
    if q == GUARANTEED:
        return f"{base}/pod{uid}"
    return f"{base}/{q.lower()}/pod{uid}"


CGROUP_FS = "/sys/fs/cgroup"


def remove_pod_cgroup(parent: str, fs: str = CGROUP_FS) -> list[str]:
    """After the pod's last sandbox is removed: rmdir its (now empty) pod cgroup in every
    hierarchy, as the kubelet's pod container manager does. kubeletpy's runtime already
    removes the pod cgroup it created; containerd/runc create it (as the parent of the
    sandbox's cgroup) but leave it behind. Only rmdir, never recursive: a cgroup that
    still has processes or children is left alone (EBUSY). Returns what was removed."""
    rel = parent.strip("/")
    if not rel:
        return []
    dirs = [os.path.join(fs, rel)] if os.path.exists(os.path.join(fs, "cgroup.controllers")) else []
    try:
        for ctrl in sorted(os.listdir(fs)):
            d = os.path.join(fs, ctrl)
            if os.path.isdir(d) and not os.path.islink(d):  # v1 controllers, and a hybrid's unified
                dirs.append(os.path.join(d, rel))
    except OSError:
        pass
    removed = []
    for d in dirs:
        try:
            os.rmdir(d)
            removed.append(d)
        except OSError:
            pass  # gone already (ENOENT), or still in use (EBUSY): not ours to force
    return removed
