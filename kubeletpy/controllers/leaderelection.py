"""Leader election on a `coordination.k8s.io/v1` Lease, as kube-scheduler and
kube-controller-manager do, so only one replica acts at a time.

The record is the Lease spec: `holderIdentity`, `leaseDurationSeconds`, `acquireTime`,
`renewTime`, `leaseTransitions`. Every write is a PUT carrying the resourceVersion we read
(optimistic concurrency), so two candidates racing for an expired lease cannot both win:
the second PUT gets 409 Conflict.

Expiry is judged on the *local* clock from when we last saw the record change (client-go's
`observedTime`), never by comparing our clock with the holder's `renewTime`, so clock skew
between machines does not matter. A candidate takes over `leaseDurationSeconds` after the
holder's last renewal it observed. The leader steps down (cancels its work) if it cannot
renew for `renew_deadline`; on a clean stop it releases the lease (empty holder) so a
successor need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kubeletpy.apiclient import (
    LEASES,
    AlreadyExistsError,
    ApiError,
    Client,
    ConflictError,
    NotFoundError,
    TransportError,
    micro_time,
)

log = logging.getLogger("kubeletpy.controllers.leaderelection")


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(self, client: Client, name: str, namespace: str = "kube-system", identity: str = "", *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 release_on_cancel: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        if not (lease_duration > renew_deadline > retry_period > 0):
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.clock = clock
        self.is_leader = False
        self.transitions_seen = 0
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None

    # ------------------------------------------------------------------ one attempt

    def _spec(self, acquire: bool, transitions: int) -> dict[str, Any]:
        now = micro_time()
        spec: dict[str, Any] = {"holderIdentity": self.identity,
                                "leaseDurationSeconds": max(1, round(self.lease_duration)),
                                "renewTime": now, "leaseTransitions": transitions}
        if acquire:
            spec["acquireTime"] = now
        else:
            spec["acquireTime"] = ((self._lease or {}).get("spec") or {}).get("acquireTime") or now
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One round: create, renew, or take over an expired lease. True when we hold it afterwards."""
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except NotFoundError:
            try:
                self._lease = await self.client.create(LEASES, {
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(True, 0)}, field_manager="leader-election")
            except AlreadyExistsError:
                return False
            self._observe(self._lease)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(lease)
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if self.clock() < self._observed_at + duration:
                return False  # somebody else holds a live lease
        transitions = int(spec.get("leaseTransitions") or 0)
        acquiring = holder != self.identity
        if acquiring:
            transitions += 1  # like client-go: every change of holder, including from a released lease
        self._lease = lease
        body = {"metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {**spec, **self._spec(acquiring, transitions)}}
        try:
            self._lease = await self.client.update(LEASES, body, field_manager="leader-election")
        except (ConflictError, NotFoundError):
            return False
        self._observe(self._lease)
        if acquiring:
            self.transitions_seen = transitions
        return True

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        rec = (spec.get("holderIdentity") or "", spec.get("renewTime") or "")
        if rec != self._observed:
            self._observed = rec
            self._observed_at = self.clock()

    async def release(self) -> None:
        """Give the lease up now (empty holder, 1 s duration) so a successor starts at once."""
        if self._lease is None:
            return
        spec = dict(self._lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return
        spec.update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time()})
        body = {"metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": self._lease["metadata"]["resourceVersion"]}, "spec": spec}
        with contextlib.suppress(ApiError, TransportError):
            await self.client.update(LEASES, body, field_manager="leader-election")

    # ------------------------------------------------------------------ the loop

    async def _acquire(self) -> None:
        while True:
            try:
                if await self.try_acquire_or_renew():
                    return
            except (ApiError, TransportError) as e:
                log.debug("lease %s/%s: %s", self.namespace, self.name, e)
            await asyncio.sleep(self.retry_period)

    async def _renew_until_lost(self) -> None:
        last_ok = self.clock()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                if await self.try_acquire_or_renew():
                    last_ok = self.clock()
                    continue
                log.warning("lease %s/%s: lost to %s", self.namespace, self.name, (self._observed or ("",))[0])
                return
            except (ApiError, TransportError) as e:
                log.warning("lease %s/%s: renew failed: %s", self.namespace, self.name, e)
            if self.clock() - last_ok > self.renew_deadline:
                log.warning("lease %s/%s: could not renew for %.1fs; stepping down", self.namespace, self.name,
                            self.renew_deadline)
                return

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Forever: wait to become leader, run `work()` while leading, stop it when leadership is lost."""
        try:
            while True:
                await self._acquire()
                self.is_leader = True
                log.info("lease %s/%s: %s became leader", self.namespace, self.name, self.identity)
                task = asyncio.ensure_future(work())
                renew = asyncio.ensure_future(self._renew_until_lost())
                try:
                    await asyncio.wait({task, renew}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    self.is_leader = False
                    for t in (task, renew):
                        t.cancel()
                    await asyncio.gather(task, renew, return_exceptions=True)
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("lease %s/%s: leader work failed: %r", self.namespace, self.name, task.exception())
                    await self.release()
                    await asyncio.sleep(self.retry_period)
        except asyncio.CancelledError:
            if self.release_on_cancel:  # one cancellation is delivered; this await still runs to the end
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(self.release(), self.retry_period * 2 + 1)
            raise
