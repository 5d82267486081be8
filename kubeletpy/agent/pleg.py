"""PLEG: the pod lifecycle event generator, by relisting the runtime.

Every `relist_period` (1 s) the agent lists the sandboxes and containers it manages and
diffs them with the previous list; a pod whose runtime objects changed (new, gone, or a
state change) gets its worker kicked. Workers read the snapshot instead of asking the
runtime themselves, so 250 pods cost two list calls a second, not 500. After a worker
creates a sandbox or starts a container it writes the runtime's answer through into the
snapshot (kept until a relist that began afterwards shows it), so starting pods costs no
relists at all; other changes (kills) call `relist_now()`, and concurrent callers share one
relist that began after they asked.
"""

from __future__ import annotations

import asyncio
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
    def __init__(self, cri: Any, on_change: Callable[[str], None], period: float = 1.0) -> None:
        self.cri = cri
        self.on_change = on_change
        self.period = period
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
        while True:
            try:
                await self.relist_now()
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the runtime may be restarting
                self.healthy = False
                log.warning("relist failed: %s", e)
            await asyncio.sleep(self.period)
