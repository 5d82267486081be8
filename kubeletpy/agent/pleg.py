"""PLEG: the pod lifecycle event generator, by relisting the runtime.

Every `relist_period` (1 s) the agent lists the sandboxes and containers it manages and
diffs them with the previous list; a pod whose runtime objects changed (new, gone, or a
state change) gets its worker kicked. Workers read the snapshot instead of asking the
runtime themselves, so 250 pods cost two list calls a second, not 500. After a worker
creates a sandbox or starts a container it writes the runtime's answer through into the
snapshot (kept until a relist that began afterwards shows it), so starting pods costs no
relists at all; other changes (kills) call `relist_now()`, and concurrent callers share one
relist that began after they asked.

Evented, when the runtime streams CRI GetContainerEvents (ours does; containerd 1.7+
does): a container that exits or is removed, or a pod whose infra dies, wakes a relist
at once instead of within the second, and the periodic relist drops to
`evented_period` (10 s), a safety net, like the kubelet's evented PLEG. A runtime
without the RPC (containerd 1.6) keeps the 1 s relist; a broken stream falls back to it
until the stream is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeletpy.agent import labels as L

log = logging.getLogger("kubeletpy.agent.pleg")


@dataclass
class Snapshot:
    sandboxes: dict[str, list[Any]] = field(default_factory=dict)   # pod uid -> sandboxes
    containers: dict[str, list[Any]] = field(default_factory=dict)  # pod uid -> containers
    by_id: dict[str, Any] = field(default_factory=dict)             # container id -> container


def _fingerprint(sbs: list[Any], cs: list[Any]) -> tuple[Any, ...]:
    return (tuple(sorted((s.id, s.state) for s in sbs)), tuple(sorted((c.id, c.state) for c in cs)))


class PLEG:
    def __init__(self, cri: Any, on_change: Callable[[str], None], period: float = 1.0,
                 evented_period: float = 10.0) -> None:
        self.cri = cri
        self.on_change = on_change
        self.period = period
        self.evented_period = evented_period
        self.events_live = False   # a GetContainerEvents stream is open right now
        self.events_seen = 0
        self._wake = asyncio.Event()
        self.snapshot = Snapshot()
        self._prints: dict[str, tuple[Any, ...]] = {}
        self._lock = asyncio.Lock()
        self._begun = 0
        self._completed = 0
        self.healthy = False
        self.relists = 0
        self._pending: dict[str, tuple[int, Any]] = {}  # id -> (mark, object) written through

    async def _relist(self, number: int) -> None:
        sel = {L.MANAGED: "true"}
        t0 = time.monotonic()
        sbs, cs = await asyncio.gather(self.cri.list_pod_sandboxes(sel), self.cri.list_containers(sel))
        log.debug("relist: %d sandboxes, %d containers in %.1f ms", len(sbs), len(cs), (time.monotonic() - t0) * 1e3)
        snap = Snapshot()
        # written-through objects this relist may predate stay; the others are in the list
        self._pending = {k: v for k, v in self._pending.items() if v[0] >= number}
        listed = {s.id for s in sbs} | {c.id for c in cs}
        extra = [obj for _, obj in self._pending.values() if obj.id not in listed]
        for s in [*sbs, *(o for o in extra if not hasattr(o, "pod_sandbox_id"))]:
            snap.sandboxes.setdefault(s.labels.get(L.POD_UID, ""), []).append(s)
        for c in [*cs, *(o for o in extra if hasattr(o, "pod_sandbox_id"))]:
            snap.containers.setdefault(c.labels.get(L.POD_UID, ""), []).append(c)
            snap.by_id[c.id] = c
        self.snapshot = snap
        self.relists += 1
        prints = {uid: _fingerprint(snap.sandboxes.get(uid, []), snap.containers.get(uid, []))
                  for uid in set(snap.sandboxes) | set(snap.containers)}
        changed = {u for u in set(prints) | set(self._prints) if prints.get(u) != self._prints.get(u)}
        self._prints = prints
        for uid in changed:
            self.on_change(uid)

    def record_sandbox(self, st: Any) -> None:
        """Write-through: a sandbox this agent just created (its PodSandboxStatus) enters the
        snapshot at once, so its worker need not wait for a relist (pod start latency; fewer
        List calls on a runtime that is busy starting pods). The next relist replaces it."""
        from kubeletpy.agent.cri import pb

        sb = pb.PodSandbox(id=st.id, metadata=st.metadata, state=st.state, created_at=st.created_at,
                           labels=st.labels, annotations=st.annotations, runtime_handler=st.runtime_handler)
        uid = sb.labels.get(L.POD_UID, "")
        items = [s for s in self.snapshot.sandboxes.get(uid, []) if s.id != sb.id]
        self.snapshot.sandboxes[uid] = [*items, sb]
        self._pending[sb.id] = (self._begun, sb)

    def record_container(self, st: Any, sandbox_id: str) -> None:
        """Write-through for a container this agent just created or started (its ContainerStatus)."""
        from kubeletpy.agent.cri import pb

        c = pb.Container(id=st.id, pod_sandbox_id=sandbox_id, metadata=st.metadata, image=st.image,
                         image_ref=st.image_ref, state=st.state, created_at=st.created_at, labels=st.labels,
                         annotations=st.annotations)
        uid = c.labels.get(L.POD_UID, "")
        items = [x for x in self.snapshot.containers.get(uid, []) if x.id != c.id]
        self.snapshot.containers[uid] = [*items, c]
        self.snapshot.by_id[c.id] = c
        self._pending[c.id] = (self._begun, c)

    def mark(self) -> int:
        """A point in time to compare relists with (see `fresh_since`)."""
        return self._begun

    def fresh_since(self, mark: int) -> bool:
        """Has a relist that began after `mark` completed (so the snapshot shows what was
        done before the mark)?"""
        return self._completed > mark

    async def relist_now(self) -> None:
        asked_at = self._begun
        async with self._lock:
            if self._completed > asked_at:
                return  # a relist that began after we asked has finished: its view is fresh enough
            self._begun += 1
            mine = self._begun
            await self._relist(mine)
            self._completed = mine

    async def run(self) -> None:
        follower = asyncio.create_task(self._follow_events())
        try:
            while True:
                try:
                    await self.relist_now()
                    self.healthy = True
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - the runtime may be restarting
                    self.healthy = False
                    log.warning("relist failed: %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           self.evented_period if self.events_live else self.period)
                self._wake.clear()
        finally:
            follower.cancel()

    async def _follow_events(self) -> None:
        """Keep a GetContainerEvents stream open; exits and removals wake the relist loop."""
        import grpc

        from kubeletpy.agent.cri import pb

        wake_on = {pb.CONTAINER_STOPPED_EVENT, pb.CONTAINER_DELETED_EVENT}
        while True:
            call = self.cri.rt.GetContainerEvents(pb.GetEventsRequest())
            try:
                await call.initial_metadata()  # the runtime sends it as the stream opens
                if not call.done():  # (a refusal, e.g. UNIMPLEMENTED, ends the call with its headers)
                    self.events_live = True
                    self._wake.set()  # what changed while no stream was open
                    log.info("following runtime events; relisting every %gs as a safety net", self.evented_period)
                async for ev in call:
                    self.events_seen += 1
                    if ev.container_event_type in wake_on:
                        self._wake.set()
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self.events_live = False
                    log.info("the runtime has no GetContainerEvents: relisting every %gs", self.period)
                    return
                log.debug("runtime event stream ended: %s", e.code())
            finally:
                if self.events_live:
                    self.events_live = False
                    self._wake.set()
            await asyncio.sleep(1.0)
