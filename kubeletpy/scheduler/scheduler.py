"""The scheduler process: informers feed a cache and a queue; one loop decides, binds run concurrently.

Why this shape (it is kube-scheduler's, scaled down):

* **Two pod informers.** Pending pods (`spec.nodeName=`) are the work queue; assigned pods
  (`spec.nodeName!=`) are the cache of what each node already carries. Terminal pods
  (Succeeded/Failed) free their resources, so both selectors exclude them.
* **Assume, then bind.** The decision is synchronous and in memory; the pod is *assumed*
  onto its node at once so the next decision already sees the resources taken, and the
  `POST pods/<name>/binding` runs in the background (up to `bind_concurrency` at a time).
  That is what makes hundreds of binds a second possible over HTTPS. A failed bind
  forgets the assumption and retries the pod after its backoff.
* **Unschedulable pods wait for a reason.** They get `PodScheduled=False/Unschedulable`
  and a FailedScheduling event, then stay parked until a node is added/changed or a bound
  pod goes away, or the periodic flush (`unschedulable_timeout`) gives them another go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from kubeletpy.apiclient import (
    EVENTS,
    NODES,
    PODS,
    ApiError,
    Client,
    Informer,
    NotFoundError,
    TransportError,
    object_key,
    rfc3339,
)

from . import core
from .framework import NodeInfo, PodInfo
from .queue import SchedulingQueue

log = logging.getLogger("kubeletpy.scheduler")

DEFAULT_SCHEDULER_NAME = "default-scheduler"
_NOT_TERMINAL = "status.phase!=Succeeded,status.phase!=Failed"


def _node_relevant(node: dict[str, Any]) -> tuple[Any, ...]:
    """The parts of a Node that can change a scheduling decision (not heartbeats)."""
    spec, status, meta = node.get("spec") or {}, node.get("status") or {}, node.get("metadata") or {}
    ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return (repr(meta.get("labels")), repr(spec.get("taints")), bool(spec.get("unschedulable")),
            repr(status.get("allocatable")), ready)


def _pod_relevant(pod: dict[str, Any]) -> tuple[Any, ...]:
    meta = pod.get("metadata") or {}
    return repr(pod.get("spec")), repr(meta.get("labels")), repr(meta.get("annotations"))


class Scheduler:
    def __init__(self, client: Client, *, scheduler_name: str = DEFAULT_SCHEDULER_NAME, identity: str = "",
                 bind_concurrency: int = 32, initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 unschedulable_timeout: float = 60.0, record_scheduled_events: bool = True) -> None:
        self.client = client
        self.scheduler_name = scheduler_name
        self.identity = identity or f"{socket.gethostname()}_{os.getpid()}"
        self.record_scheduled_events = record_scheduled_events
        self.queue = SchedulingQueue(initial_backoff, max_backoff, unschedulable_timeout)
        self.pending = Informer(client, PODS, field_selector="spec.nodeName=," + _NOT_TERMINAL)
        self.assigned = Informer(client, PODS, field_selector="spec.nodeName!=," + _NOT_TERMINAL)
        self.node_informer = Informer(client, NODES)
        self.nodes: dict[str, NodeInfo] = {}
        self.assumed: dict[str, str] = {}  # pod key -> node, until the assigned informer confirms
        self._bound_at: dict[str, float] = {}  # assumed pods whose bind succeeded -> when
        self.assume_ttl = 30.0
        self._bind_sem = asyncio.Semaphore(bind_concurrency)
        self._event_sem = asyncio.Semaphore(8)
        self._tasks: set[asyncio.Task] = set()
        # (pod uid, reason) -> [event name, message, count]: repeats bump the count, like the event recorder
        self._events: dict[tuple[str, str], list[Any]] = {}
        self.bound = 0
        self.bind_errors = 0
        self.unschedulable_attempts = 0
        self.pending.add_handlers(self._pending_add, self._pending_update, self._pending_delete)
        self.assigned.add_handlers(self._assigned_add, self._assigned_update, self._assigned_delete)
        self.node_informer.add_handlers(self._node_add, self._node_update, self._node_delete)

    # ------------------------------------------------------------------ informer handlers

    def _responsible(self, pod: dict[str, Any]) -> bool:
        spec = pod.get("spec") or {}
        return ((spec.get("schedulerName") or DEFAULT_SCHEDULER_NAME) == self.scheduler_name
                and not spec.get("nodeName") and not (pod.get("metadata") or {}).get("deletionTimestamp")
                and not spec.get("schedulingGates"))

    def _pending_add(self, pod: dict[str, Any]) -> None:
        if self._responsible(pod):
            self.queue.add(object_key(pod), int((pod.get("spec") or {}).get("priority") or 0))

    def _pending_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = object_key(new)
        if not self._responsible(new):
            self.queue.delete(key)
        elif _pod_relevant(old) != _pod_relevant(new):  # our own status writes must not requeue the pod
            self.queue.add(key, int((new.get("spec") or {}).get("priority") or 0))

    def _pending_delete(self, pod: dict[str, Any]) -> None:
        self.queue.delete(object_key(pod))  # deleted, or bound (it left the selector)

    def _node_info(self, name: str) -> NodeInfo:
        ni = self.nodes.get(name)
        if ni is None:
            ni = self.nodes[name] = NodeInfo(name=name)
        return ni

    def _assigned_add(self, pod: dict[str, Any]) -> None:
        key = object_key(pod)
        node = (pod.get("spec") or {}).get("nodeName") or ""
        prev = self.assumed.pop(key, None)
        self._bound_at.pop(key, None)
        if prev is not None and prev != node and prev in self.nodes:
            self.nodes[prev].remove_pod(key)
        self._node_info(node).add_pod(PodInfo.of(pod))

    def _assigned_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Agents update pod status often; only a spec change (or a first sighting) touches the node totals."""
        key = object_key(new)
        node = (new.get("spec") or {}).get("nodeName") or ""
        ni = self.nodes.get(node)
        if ni is not None and key in ni.pods and key not in self.assumed and old.get("spec") == new.get("spec"):
            ni.pods[key].pod = new
            return
        self._assigned_add(new)

    def _assigned_delete(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        ni = self.nodes.get(node)
        if ni is not None:
            ni.remove_pod(object_key(pod))
        self.queue.move_all_to_active()  # room was freed

    def _node_add(self, node: dict[str, Any]) -> None:
        self._node_info(node["metadata"]["name"]).set_node(node)
        self.queue.move_all_to_active()

    def _node_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._node_info(new["metadata"]["name"]).set_node(new)
        if _node_relevant(old) != _node_relevant(new):
            self.queue.move_all_to_active()

    def _node_delete(self, node: dict[str, Any]) -> None:
        ni = self.nodes.get(node["metadata"]["name"])
        if ni is not None:
            ni.node = None
            if not ni.pods:
                del self.nodes[ni.name]

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Run until cancelled: informers, then the scheduling loop."""
        informers = [asyncio.create_task(i.run(), name=f"scheduler-informer-{n}") for n, i in
                     (("nodes", self.node_informer), ("assigned", self.assigned), ("pending", self.pending))]
        informers.append(asyncio.create_task(self._expire_assumed(), name="scheduler-assume-expiry"))
        try:
            await asyncio.gather(self.node_informer.wait_synced(), self.assigned.wait_synced())
            await self.pending.wait_synced()
            log.info("scheduler %s: caches synced (%d nodes, %d pending pods)", self.identity,
                     len(self.node_informer.store), len(self.pending.store))
            n = 0
            while True:
                key = await self.queue.pop()
                self.schedule_one(key)
                n += 1
                if n % 16 == 0:
                    await asyncio.sleep(0)  # let informer events and bind answers in
        finally:
            for t in informers + list(self._tasks):
                t.cancel()
            await asyncio.gather(*informers, *self._tasks, return_exceptions=True)

    async def _expire_assumed(self) -> None:
        """Drop assumptions whose confirmation never came (e.g. the pod was deleted while the assigned
        informer was re-listing), so their resources do not stay reserved forever."""
        while True:
            await asyncio.sleep(self.assume_ttl / 3)
            cutoff = time.monotonic() - self.assume_ttl
            for key, at in list(self._bound_at.items()):
                if at < cutoff and self.assigned.get(key) is None:
                    node = self.assumed.get(key)
                    del self._bound_at[key]
                    if node is not None:
                        log.info("assumed pod %s on %s was never confirmed; forgetting it", key, node)
                        self._forget(key, node)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def schedule_one(self, key: str) -> str | None:
        pod = self.pending.get(key)
        if pod is None or not self._responsible(pod) or key in self.assumed:
            return None
        pi = PodInfo.of(pod)
        result = core.schedule(pi, self.nodes.values())
        if result.node is None:
            self.unschedulable_attempts += 1
            self.queue.park_unschedulable(key)
            log.info("pod %s is unschedulable: %s", key, result.message)
            self._spawn(self._record_unschedulable(pod, result.message))
            return None
        self.assumed[key] = result.node
        self._node_info(result.node).add_pod(pi)
        self._spawn(self._bind(pod, result.node))
        return result.node

    def _forget(self, key: str, node: str) -> None:
        if self.assumed.get(key) == node:
            del self.assumed[key]
            self._bound_at.pop(key, None)
            ni = self.nodes.get(node)
            if ni is not None:
                ni.remove_pod(key)

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        key = object_key(pod)
        async with self._bind_sem:
            try:
                await self.client.bind(meta["namespace"], meta["name"], node, meta.get("uid", ""))
            except NotFoundError:
                self._forget(key, node)
                self.queue.delete(key)
                return
            except (ApiError, TransportError) as e:
                self.bind_errors += 1
                self._forget(key, node)
                if isinstance(e, ApiError) and e.code == 409 and "already assigned" in e.message:
                    return  # someone else bound it; the assigned informer will tell us
                log.warning("binding %s to %s failed: %s", key, node, e)
                self.queue.requeue_backoff(key)
                return
        self.bound += 1
        self.queue.attempts.pop(key, None)
        if key in self.assumed:  # not confirmed by the assigned informer yet
            self._bound_at[key] = time.monotonic()
        if self.record_scheduled_events:
            await self._event(pod, "Normal", "Scheduled",
                              f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")

    # ------------------------------------------------------------------ reporting

    async def _record_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        current = next((c for c in (pod.get("status") or {}).get("conditions") or []
                        if c.get("type") == "PodScheduled"), {})
        if (current.get("status"), current.get("reason"), current.get("message")) != (
                "False", "Unschedulable", message):
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                    "lastProbeTime": None, "lastTransitionTime": rfc3339()}
            try:
                await self.client.patch(PODS, meta["name"], {"status": {"conditions": [cond]}}, meta["namespace"],
                                        type="strategic", subresource="status", field_manager=self.scheduler_name)
            except (ApiError, TransportError) as e:
                log.debug("could not mark %s/%s unschedulable: %s", meta["namespace"], meta["name"], e)
        await self._event(pod, "Warning", "FailedScheduling", message)

    async def _event(self, pod: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an Event; repeats of the same (pod, reason, message) bump `count` like the event recorder does."""
        meta = pod["metadata"]
        now = rfc3339()
        ident = (meta.get("uid", ""), reason)
        async with self._event_sem:
            prev = self._events.get(ident)
            try:
                if prev is not None and prev[1] == message:
                    prev[2] += 1
                    await self.client.patch(EVENTS, prev[0], {"count": prev[2], "lastTimestamp": now},
                                            meta["namespace"], field_manager=self.scheduler_name)
                    return
                name = f"{meta['name']}.{time.time_ns():x}"
                await self.client.create(EVENTS, {
                    "metadata": {"name": name, "namespace": meta["namespace"]},
                    "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"],
                                       "name": meta["name"], "uid": meta.get("uid", ""),
                                       "resourceVersion": meta.get("resourceVersion", "")},
                    "reason": reason, "message": message, "type": type_,
                    "source": {"component": self.scheduler_name}, "firstTimestamp": now, "lastTimestamp": now,
                    "count": 1, "action": "Scheduling", "reportingComponent": self.scheduler_name,
                    "reportingInstance": self.identity}, field_manager=self.scheduler_name)
                self._events[ident] = [name, message, 1]
                if len(self._events) > 10000:
                    self._events.clear()
            except (ApiError, TransportError) as e:
                log.debug("could not record event for %s/%s: %s", meta["namespace"], meta["name"], e)

