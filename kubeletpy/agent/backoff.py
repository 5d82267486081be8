"""CrashLoopBackOff (and image pull backoff): how long before the next attempt.

The kubelet's rule: the first failure restarts at once and arms a 10 s delay; each further
failure inside the delay waits it out, and each restart doubles the delay up to 5 min.
A container that ran for `reset_after` (10 min) before exiting starts again from 10 s.
Keyed by (pod uid, container) and kept in memory: a restarted agent forgets the delay (as
the kubelet does) but still knows the restart count from the CRI annotations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Entry:
    delay: float
    updated: float


@dataclass
class Backoff:
    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0
    clock: Callable[[], float] = time.time
    _entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)

    def next(self, key: tuple[str, str]) -> float:
        """An attempt is made now: arm (or double) the delay the next failure must wait."""
        now = self.clock()
        e = self._entries.get(key)
        if e is None or now - e.updated > 2 * self.maximum + self.reset_after:
            delay = self.initial
        else:
            delay = min(self.maximum, e.delay * 2)
        self._entries[key] = _Entry(delay, now)
        return delay

    def remaining(self, key: tuple[str, str], since: float) -> float:
        """Seconds still to wait after a failure at `since` (0: go ahead)."""
        e = self._entries.get(key)
        if e is None:
            return 0.0
        return max(0.0, since + e.delay - self.clock())

    def current_delay(self, key: tuple[str, str]) -> float:
        e = self._entries.get(key)
        return e.delay if e else 0.0

    def last_event(self, key: tuple[str, str]) -> float:
        e = self._entries.get(key)
        return e.updated if e else 0.0

    def forget(self, key: tuple[str, str]) -> None:
        self._entries.pop(key, None)

    def forget_pod(self, uid: str) -> None:
        for k in [k for k in self._entries if k[0] == uid]:
            del self._entries[k]
