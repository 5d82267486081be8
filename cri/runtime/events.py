"""Container lifecycle events for CRI GetContainerEvents, and how exits are noticed.

Why events: without them a kubelet learns that a container died only by relisting the
runtime (every second here, for every pod). containerd and CRI-O stream
CREATED/STARTED/STOPPED/DELETED events instead, and so do we.

Created, started and deleted are the runtime's own doing, published where they happen.
Exits are not: the process is the shim's child, not ours. A pidfd (pidfd_open(2))
works for any process and becomes readable when it exits, so one thread polls the
pidfds of every running container and pod infra process; when one fires, the shim has
the exit status on disk moments later. A restarted runtime re-arms them for whatever
is still running, so no exit is missed across restarts (one that happened while no
runtime ran is published as soon as the new one finds it).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cri.shim.linux import start_time as _start_time

log = logging.getLogger("cri.runtime.events")


class ContainerEventType(enum.IntEnum):  # CRI runtime.v1 numbering
    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@dataclass(frozen=True)
class ContainerEvent:
    container_id: str        # a container's id, or a pod sandbox's for the sandbox's own events
    type: ContainerEventType
    created_at: int          # ns since the epoch
    sandbox_id: str


class EventHub:
    """Fan-out to every subscriber (one per GetContainerEvents stream).

    A subscriber that stops reading loses events instead of growing memory without
    bound (containerd drops slow event consumers too): its queue is bounded and
    `dropped` counts what did not fit.
    """

    def __init__(self, queue_size: int = 4096) -> None:
        self._subs: set[queue.Queue[ContainerEvent]] = set()
        self._lock = threading.Lock()
        self._size = queue_size
        self.dropped = 0

    def subscribe(self) -> queue.Queue[ContainerEvent]:
        q: queue.Queue[ContainerEvent] = queue.Queue(self._size)
        with self._lock:
            self._subs.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[ContainerEvent]) -> None:
        with self._lock:
            self._subs.discard(q)

    def publish(self, container_id: str, kind: ContainerEventType, sandbox_id: str) -> None:
        ev = ContainerEvent(container_id, kind, time.time_ns(), sandbox_id)
        with self._lock:
            subs = list(self._subs)
        for q in subs:
            try:
                q.put_nowait(ev)
            except queue.Full:
                self.dropped += 1




def _readable(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLIN for _, ev in p.poll(0))


class ExitWatcher:
    """Calls `on_exit(key)` (in its own thread) once the process registered under `key` ends."""

    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self.on_exit = on_exit
        self._fds: dict[int, str] = {}       # pidfd -> key
        self._keys: dict[str, int] = {}      # key -> pidfd
        self._lock = threading.Lock()
        self._poll = select.poll()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._poll.register(self._wake_r, select.POLLIN)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, key: str, pid: int, start_time: int = 0) -> None:
        """Watch `pid` (if `start_time` is given, only if it is still that process). A process
        already gone is reported at once."""
        if pid <= 0:
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._report(key)
            return
        if start_time and _start_time(pid) != start_time:  # the pid was reused: ours is gone
            os.close(fd)
            self._report(key)
            return
        with self._lock:
            if self._closed or key in self._keys:
                os.close(fd)
                return
            self._fds[fd], self._keys[key] = key, fd
            self._poll.register(fd, select.POLLIN)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def forget(self, key: str) -> None:
        with self._lock:
            fd = self._keys.pop(key, None)
            if fd is None:
                return
            self._fds.pop(fd, None)
            self._poll.unregister(fd)
        os.close(fd)

    def watching(self) -> set[str]:
        with self._lock:
            return set(self._keys)

    def _report(self, key: str) -> None:
        try:
            self.on_exit(key)
        except Exception:  # noqa: BLE001 - a failing callback must not stop the watcher
            log.exception("exit handler for %s failed", key)

    def _run(self) -> None:
        while True:
            ready = self._poll.poll()
            if self._closed:
                return
            for fd, _ in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    # The fd number may have been forgotten and reused for another process while
                    # poll() still waited on the old file: trust only what the fd says now.
                    if fd not in self._fds or not _readable(fd):
                        continue
                    key = self._fds.pop(fd)
                    self._keys.pop(key, None)
                    self._poll.unregister(fd)
                os.close(fd)
                self._report(key)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fds = list(self._fds)
            self._fds.clear()
            self._keys.clear()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(5)
        for fd in [*fds, self._wake_r, self._wake_w]:
            with contextlib.suppress(OSError):
                os.close(fd)
