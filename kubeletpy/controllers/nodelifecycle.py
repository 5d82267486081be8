"""Node lifecycle: a node's health follows its Lease; unhealthy nodes are tainted; pods that
do not tolerate the taints are evicted (the taint-eviction controller).

**Health.** The node agent renews `kube-node-lease/<node>` every few seconds and posts
node status less often. Every `monitor_period` we look at both; if neither the Lease's
`renewTime` nor the Ready condition's `lastHeartbeatTime` changed for `grace_period`
(Kubernetes' --node-monitor-grace-period, 50 s), the agent is presumed gone: every node
condition becomes `Unknown` with reason `NodeStatusUnknown` and message "Kubelet stopped
posting node status." ("...never posted..." if it never did). Staleness is measured on
*our* clock from when we saw a value change, so clock skew between machines is harmless.

**Taints** (TaintNodesByCondition + taint-based evictions). Ready=False gives
`node.kubernetes.io/not-ready`, Ready=Unknown `node.kubernetes.io/unreachable`, each with
a NoSchedule and a NoExecute (with `timeAdded`) taint; Ready=True removes them. Taint
updates are conditional on the Node's resourceVersion, so taints others set are kept.

**Eviction.** A pod bound to a node with NoExecute taints is evicted at once if it does
not tolerate one of them, otherwise after the smallest `tolerationSeconds` of the
tolerations it uses (none set: never), counted from when the taint appeared. Pods get the
API server's default tolerations (not-ready/unreachable, 300 s) unless they set their own.
Eviction is what Kubernetes does: a `DisruptionTarget` condition (reason
DeletionByTaintManager) on the pod, then DELETE, and a `TaintManagerEviction` event, so a
workload controller sees the pod going and replaces it. Pods on an unknown node are also
marked Ready=False, like the real controller does.

**Orphans** (PodGC). When a Node object is deleted, the pods still bound to it can never be
confirmed gone by an agent; after `orphan_grace` seconds (the node did not come back) they
get a `DisruptionTarget` condition (reason DeletionByPodGC) and are deleted at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubeletpy.apiclient import (
    EVENTS,
    LEASES,
    NODES,
    PODS,
    ApiError,
    Client,
    ConflictError,
    Informer,
    NotFoundError,
    TransportError,
    object_key,
    rfc3339,
)
from kubeletpy.scheduler.framework import tolerates

log = logging.getLogger("kubeletpy.controllers.nodelifecycle")

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
OUR_TAINT_KEYS = (NOT_READY, UNREACHABLE)
CONDITION_TYPES = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
LEASE_NAMESPACE = "kube-node-lease"
COMPONENT = "node-controller"
EVICTION_COMPONENT = "taint-eviction-controller"


@dataclass(slots=True)
class _Health:
    probe_at: float          # our clock, when we last saw a heartbeat change
    renew: str = ""          # the Lease's renewTime last seen
    heartbeat: str = ""      # the Ready condition's lastHeartbeatTime last seen


def ready_status(node: dict[str, Any]) -> str | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status"))
    return None


def desired_taints(ready: str | None) -> list[tuple[str, str]]:
    """(key, effect) pairs the Ready status calls for; None (never reported) calls for nothing yet."""
    if ready == "False":
        return [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
    if ready == "Unknown":
        return [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
    return []


def reconcile_taints(taints: list[dict[str, Any]], ready: str | None, now: str) -> list[dict[str, Any]] | None:
    """The node's new taint list, or None when nothing changes. Other owners' taints are kept."""
    want = desired_taints(ready)
    have = [(t.get("key"), t.get("effect")) for t in taints if t.get("key") in OUR_TAINT_KEYS]
    if sorted(have) == sorted(want):
        return None
    out = [t for t in taints if t.get("key") not in OUR_TAINT_KEYS or (t.get("key"), t.get("effect")) in want]
    for key, effect in want:
        if (key, effect) not in have:
            t: dict[str, Any] = {"key": key, "effect": effect}
            if effect == "NoExecute":
                t["timeAdded"] = now
            out.append(t)
    return out


def mark_unknown(node: dict[str, Any], now: str) -> bool:
    """Set every node condition to Unknown, as the node controller does; True when anything changed."""
    status = node.setdefault("status", {})
    conds = status.setdefault("conditions", [])
    by_type = {c.get("type"): c for c in conds}
    changed = False
    created = (node.get("metadata") or {}).get("creationTimestamp") or now
    for typ in CONDITION_TYPES:
        c = by_type.get(typ)
        if c is None:
            conds.append({"type": typ, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                          "message": "Kubelet never posted node status.", "lastHeartbeatTime": created,
                          "lastTransitionTime": now})
            changed = True
        elif c.get("status") != "Unknown":
            c.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                      "message": "Kubelet stopped posting node status.", "lastTransitionTime": now})
            changed = True
    return changed


def eviction_delay(pod: dict[str, Any], taints: list[dict[str, Any]]) -> float | None:
    """Seconds a pod may stay on a node with these NoExecute taints: 0 = now, None = forever."""
    tols = [t for t in (pod.get("spec") or {}).get("tolerations") or [] if t.get("effect") in (None, "", "NoExecute")]
    used: list[dict[str, Any]] = []
    for taint in taints:
        match = [t for t in tols if tolerates(t, taint)]
        if not match:
            return 0.0
        used += match
    secs = [t["tolerationSeconds"] for t in used if t.get("tolerationSeconds") is not None]
    if not secs:
        return None
    return float(max(0, min(int(s) for s in secs)))


class NodeLifecycleController:
    def __init__(self, client: Client, *, grace_period: float = 50.0, monitor_period: float = 5.0,
                 evict: bool = True, orphan_grace: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.grace_period = grace_period
        self.monitor_period = monitor_period
        self.evict = evict
        self.orphan_grace = orphan_grace
        self.clock = clock
        self.nodes = Informer(client, NODES)
        self.leases = Informer(client, LEASES, LEASE_NAMESPACE)
        self.pods = Informer(client, PODS, field_selector="spec.nodeName!=")
        self._health: dict[str, _Health] = {}
        self._taint_seen: dict[tuple[str, str], float] = {}  # (node, taint key) -> our clock when first seen
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._evicting: set[str] = set()
        self.evictions = 0
        self.nodes.add_handlers(self._node_changed, lambda _o, n: self._node_changed(n), self._node_deleted)
        self.pods.add_handlers(self._pod_changed, lambda _o, n: self._pod_changed(n), self._pod_deleted)

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        infs = [asyncio.create_task(i.run()) for i in (self.nodes, self.leases, self.pods)]
        try:
            await asyncio.gather(*(i.wait_synced() for i in (self.nodes, self.leases, self.pods)))
            for pod in self.pods.items():
                self._pod_changed(pod)
            while True:
                for node in self.nodes.items():
                    try:
                        await self.monitor_node(node["metadata"]["name"])
                    except (ApiError, TransportError) as e:
                        log.warning("node %s: %s", node["metadata"]["name"], e)
                await asyncio.sleep(self.monitor_period)
        finally:
            for h in self._timers.values():
                h[1].cancel()
            self._timers.clear()
            for t in infs + list(self._tasks):
                t.cancel()
            await asyncio.gather(*infs, *self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ health

    async def monitor_node(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        now = self.clock()
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name}")
        renew = str(((lease or {}).get("spec") or {}).get("renewTime") or "")
        ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
        hb = str(ready.get("lastHeartbeatTime") or "")
        h = self._health.get(name)
        if h is None:
            h = self._health[name] = _Health(now, renew, hb)
        elif (renew, hb) != (h.renew, h.heartbeat):
            h.probe_at, h.renew, h.heartbeat = now, renew, hb
        conds = (node.get("status") or {}).get("conditions") or []
        if now - h.probe_at > self.grace_period and (ready_status(node) is None or any(
                c.get("status") != "Unknown" for c in conds if c.get("type") in CONDITION_TYPES)):
            node = await self._set_unknown(name) or node
        taints = list((node.get("spec") or {}).get("taints") or [])
        new = reconcile_taints(taints, ready_status(node), rfc3339())
        if new is not None:
            await self._set_taints(name, new)

    async def _set_unknown(self, name: str) -> dict[str, Any] | None:
        for _ in range(5):
            try:
                node = await self.client.get(NODES, name)
            except NotFoundError:
                return None
            if not mark_unknown(node, rfc3339()):
                return node
            try:
                node = await self.client.update(NODES, node, subresource="status", field_manager=COMPONENT)
            except ConflictError:
                continue
            log.info("node %s: no heartbeat for %.0fs; conditions set to Unknown", name, self.grace_period)
            self._spawn(self._mark_pods_not_ready(name))
            return node
        return None

    async def _set_taints(self, name: str, taints: list[dict[str, Any]]) -> None:
        node = self.nodes.get(name)
        for _ in range(5):
            if node is None:
                return
            cur = list((node.get("spec") or {}).get("taints") or [])
            new = reconcile_taints(cur, ready_status(node), rfc3339())
            if new is None:
                return
            try:
                await self.client.patch(NODES, name, {
                    "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                    "spec": {"taints": new}}, field_manager=COMPONENT)
                log.info("node %s: taints now %s", name, [f"{t['key']}:{t['effect']}" for t in new])
                return
            except ConflictError:
                try:
                    node = await self.client.get(NODES, name)
                except NotFoundError:
                    return

    async def _mark_pods_not_ready(self, name: str) -> None:
        for pod in [p for p in self.pods.items() if (p.get("spec") or {}).get("nodeName") == name]:
            conds = (pod.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                continue
            meta = pod["metadata"]
            try:
                await self.client.patch(PODS, meta["name"], {"status": {"conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": rfc3339(), "lastProbeTime": None}]}},
                    meta["namespace"], type="strategic", subresource="status", field_manager=COMPONENT)
            except (ApiError, TransportError) as e:
                log.debug("pod %s/%s: could not mark NotReady: %s", meta["namespace"], meta["name"], e)

    # ------------------------------------------------------------------ taint eviction

    def _node_changed(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        now = self.clock()
        keys = {t.get("key", "") for t in (node.get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"}
        for k in keys:
            self._taint_seen.setdefault((name, k), now)
        for nk in [nk for nk in self._taint_seen if nk[0] == name and nk[1] not in keys]:
            del self._taint_seen[nk]
        if self.pods.synced:
            for pod in self.pods.items():
                if (pod.get("spec") or {}).get("nodeName") == name:
                    self._pod_changed(pod)

    def _node_deleted(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        self._health.pop(name, None)
        for nk in [nk for nk in self._taint_seen if nk[0] == name]:
            del self._taint_seen[nk]
        self._spawn(self._gc_orphans(name))

    async def _gc_orphans(self, name: str) -> None:
        """Pods bound to a deleted node: wait `orphan_grace` (it may be re-registering), then delete them."""
        await asyncio.sleep(self.orphan_grace)
        if self.nodes.get(name) is not None:
            return
        cond = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists", "lastTransitionTime": rfc3339(), "lastProbeTime": None}
        for pod in [p for p in self.pods.items() if (p.get("spec") or {}).get("nodeName") == name]:
            meta = pod["metadata"]
            try:
                await self.client.patch(PODS, meta["name"], {"status": {"conditions": [cond]}}, meta["namespace"],
                                        type="strategic", subresource="status", field_manager="pod-garbage-collector")
                await self.client.delete(PODS, meta["name"], meta["namespace"], grace_period=0,
                                         preconditions={"uid": meta.get("uid", "")})
                log.info("deleted pod %s/%s of deleted node %s", meta["namespace"], meta["name"], name)
            except (ApiError, TransportError) as e:
                log.debug("pod %s/%s of deleted node %s: %s", meta["namespace"], meta["name"], name, e)

    def _cancel(self, key: str) -> None:
        t = self._timers.pop(key, None)
        if t is not None:
            t[1].cancel()

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        self._cancel(object_key(pod))

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        if not self.evict:
            return
        key = object_key(pod)
        if (pod.get("metadata") or {}).get("deletionTimestamp") or key in self._evicting:
            self._cancel(key)
            return
        name = (pod.get("spec") or {}).get("nodeName") or ""
        node = self.nodes.get(name)
        taints = [t for t in ((node or {}).get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]
        if not taints:
            self._cancel(key)
            return
        delay = eviction_delay(pod, taints)
        if delay is None:
            self._cancel(key)
            return
        start = min(self._taint_seen.get((name, t.get("key", "")), self.clock()) for t in taints)
        due = start + delay
        cur = self._timers.get(key)
        if cur is not None and abs(cur[0] - due) < 1e-6:
            return
        self._cancel(key)
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0.0, due - self.clock()), lambda: self._spawn(self._evict(key)))
        self._timers[key] = (due, handle)

    async def _evict(self, key: str) -> None:
        self._timers.pop(key, None)
        pod = self.pods.get(key)
        if pod is None or key in self._evicting or (pod.get("metadata") or {}).get("deletionTimestamp"):
            return
        node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        taints = [t for t in ((node or {}).get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]
        if not taints or eviction_delay(pod, taints) is None:
            return
        self._evicting.add(key)
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            await self._emit(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {ns}/{name}")
            cond = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": rfc3339(),
                    "lastProbeTime": None}
            try:
                await self.client.patch(PODS, name, {"status": {"conditions": [cond]}}, ns, type="strategic",
                                        subresource="status", field_manager=EVICTION_COMPONENT)
                await self.client.delete(PODS, name, ns, preconditions={"uid": meta.get("uid", "")})
            except NotFoundError:
                return
            except ApiError as e:
                if e.code != 409:
                    raise
                return
            self.evictions += 1
            log.info("evicted pod %s/%s from node %s (NoExecute taint)", ns, name, pod["spec"]["nodeName"])
        except (ApiError, TransportError) as e:
            log.warning("evicting %s/%s failed: %s; retrying", ns, name, e)
            asyncio.get_running_loop().call_later(1.0, lambda: self._spawn(self._evict(key)))
        finally:
            self._evicting.discard(key)

    async def _emit(self, pod: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        now = rfc3339()
        try:
            await self.client.create(EVENTS, {
                "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta["namespace"]},
                "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"],
                                   "name": meta["name"], "uid": meta.get("uid", "")},
                "reason": reason, "message": message, "type": type_, "source": {"component": EVICTION_COMPONENT},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "reportingComponent": EVICTION_COMPONENT}, field_manager=EVICTION_COMPONENT)
        except (ApiError, TransportError) as e:
            log.debug("event for %s/%s: %s", meta["namespace"], meta["name"], e)

