"""The scheduling queue: active (heap by priority, then FIFO), backoff, and unschedulable.

* a pod that failed waits `initial * 2^(attempts-1)` seconds (capped) before it is tried
  again, so a hopeless pod does not spin;
* an unschedulable pod is parked until the cluster changes in a way that could help (a
  node added or updated, a bound pod removed) -- `move_all_to_active` -- or until the
  periodic flush gives it another chance anyway;
* a key is in at most one of the three places; re-adding an active key is a no-op.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable


class SchedulingQueue:
    def __init__(self, initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 unschedulable_timeout: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self.clock = clock
        self._heap: list[tuple[int, int, str]] = []
        self._active: set[str] = set()
        self._backoff: dict[str, float] = {}      # key -> ready at
        self._unschedulable: dict[str, float] = {}  # key -> parked at
        self.attempts: dict[str, int] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._priority: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._active) + len(self._backoff) + len(self._unschedulable)

    def add(self, key: str, priority: int = 0) -> None:
        """A new or changed pending pod: straight to active (a spec change may make it fit)."""
        self._priority[key] = priority
        self._backoff.pop(key, None)
        self._unschedulable.pop(key, None)
        if key not in self._active:
            self._active.add(key)
            heapq.heappush(self._heap, (-priority, next(self._seq), key))
            self._wake.set()

    def delete(self, key: str) -> None:
        self._active.discard(key)  # stale heap entries are skipped on pop
        self._backoff.pop(key, None)
        self._unschedulable.pop(key, None)
        self.attempts.pop(key, None)
        self._priority.pop(key, None)

    def _backoff_for(self, key: str) -> float:
        n = self.attempts.get(key, 0)
        return 0.0 if n == 0 else min(self.initial_backoff * (2 ** (n - 1)), self.max_backoff)

    def requeue_backoff(self, key: str) -> None:
        """A transient failure (the bind call failed): retry after the pod's backoff."""
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self._unschedulable.pop(key, None)
        self._backoff[key] = self.clock() + self._backoff_for(key)
        self._wake.set()

    def park_unschedulable(self, key: str) -> None:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self._backoff.pop(key, None)
        self._unschedulable[key] = self.clock()

    def move_all_to_active(self) -> None:
        """The cluster changed: parked pods go to backoff (so each still honours its own delay)."""
        if not self._unschedulable:
            return
        now = self.clock()
        for key in list(self._unschedulable):
            del self._unschedulable[key]
            self._backoff[key] = max(now, self._unschedulable_ready(key, now))
        self._wake.set()

    def _unschedulable_ready(self, key: str, now: float) -> float:
        return now + self._backoff_for(key)

    def _promote(self) -> float | None:
        """Move due backoff/unschedulable pods to active; the time until the next one is due."""
        now = self.clock()
        nxt: float | None = None
        for key, at in list(self._backoff.items()):
            if at <= now:
                del self._backoff[key]
                self._push(key)
            else:
                nxt = at if nxt is None else min(nxt, at)
        for key, since in list(self._unschedulable.items()):
            due = since + self.unschedulable_timeout
            if due <= now:
                del self._unschedulable[key]
                self._push(key)
            else:
                nxt = due if nxt is None else min(nxt, due)
        return None if nxt is None else max(nxt - now, 0.0)

    def _push(self, key: str) -> None:
        if key not in self._active:
            self._active.add(key)
            heapq.heappush(self._heap, (-self._priority.get(key, 0), next(self._seq), key))

    def pop_nowait(self) -> str | None:
        self._promote()
        while self._heap:
            _, _, key = heapq.heappop(self._heap)
            if key in self._active:
                self._active.discard(key)
                return key
        return None

    async def pop(self) -> str:
        while True:
            wait = self._promote()
            while self._heap:
                _, _, key = heapq.heappop(self._heap)
                if key in self._active:
                    self._active.discard(key)
                    return key
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait if wait is not None else 1.0)
            except TimeoutError:
                pass

    def parked(self) -> set[str]:
        return set(self._unschedulable)
