"""The storage interface the registry is written against.

The model is etcd v3's, so an etcd backend is a second implementation of the same class:

* keys are strings like `/registry/<resource>/<namespace>/<name>` (cluster-scoped kinds
  leave out the namespace); values are opaque bytes (JSON objects for us);
* every successful write bumps **one global revision**; a key remembers the revision that
  created it and the one that last modified it (`mod_revision` is the object's
  resourceVersion);
* writes are conditional on the key's current `mod_revision` (optimistic concurrency),
  creates fail if the key exists;
* `watch(prefix, revision)` yields every change with a revision greater than `revision`,
  in revision order, first from history, then live; history older than the last
  `compact()` is gone and asking for it raises `CompactedError` (HTTP 410 upstairs).

All methods are coroutines (or return async iterators) so a network backend fits; the
SQLite backend answers reads synchronously underneath.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


class StorageError(Exception):
    """Base class for the conditions callers are expected to handle."""


class KeyExistsError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class KeyNotFoundError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class ConflictError(StorageError):
    """The key's mod_revision is not the one the caller expected."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"revision conflict on {key}: expected {expected}, found {actual}")
        self.key, self.expected, self.actual = key, expected, actual


class CompactedError(StorageError):
    """The requested revision is older than the compacted history."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept: {compacted})")
        self.requested, self.compacted = requested, compacted


class WatchOverflowError(StorageError):
    """A watcher fell too far behind and was dropped; the client re-lists."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(slots=True)
class WatchEvent:
    """One change. `value` is the new value, or the last value for a delete.

    `prev_value` is the value before the change (None for a create, and possibly None
    when history is compacted); selectors need it to turn "stopped matching" into a
    DELETED event. `cache` lets upper layers decode or encode an event once and share the
    result between all watchers that receive the same instance.
    """

    type: str  # "PUT" or "DELETE"
    key: str
    value: bytes
    revision: int
    create_revision: int
    prev_value: bytes | None = None
    cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def is_create(self) -> bool:
        return self.type == "PUT" and self.create_revision == self.revision


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[KeyValue]
    revision: int  # the store revision the list was read at
    more: bool     # True when `limit` cut the result short


class Watcher(abc.ABC):
    """An async iterator of WatchEvents; `close()` ends it from the consumer side."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


MAX_WATCH_BACKLOG = 50_000  # a watcher further behind than this is dropped (the client re-lists)


class QueueWatcher(Watcher):
    """A watcher the store pushes events into and the consumer drains.

    The backlog is bounded: a consumer that falls too far behind is dropped with
    WatchOverflowError (its client re-lists) instead of growing the server's memory."""

    overflow_message = "watcher fell too far behind"

    def __init__(self) -> None:
        self._q: collections.deque[WatchEvent] = collections.deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._overflow = False

    def _enqueue(self, ev: WatchEvent) -> None:
        if len(self._q) >= MAX_WATCH_BACKLOG:
            self.overflow()
            return
        self._q.append(ev)
        self._wake.set()

    def overflow(self) -> None:
        self._overflow = True
        self.close()

    def _on_close(self) -> None:
        """Unsubscribe from the store (backend-specific)."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close()
            self._wake.set()

    async def __aiter__(self) -> AsyncIterator[WatchEvent]:
        try:
            while True:
                while self._q:
                    yield self._q.popleft()
                if self._overflow:
                    raise WatchOverflowError(self.overflow_message)
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            self.close()


class Storage(abc.ABC):
    """What the registry needs from a datastore; see the module docstring for semantics."""

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def list(self, prefix: str, *, start_after: str = "", limit: int = 0) -> ListResult:
        """Keys starting with `prefix` in key order, after `start_after`, at most `limit` (0 = all)."""

    @abc.abstractmethod
    async def count(self, prefix: str) -> int: ...

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> int:
        """Store a new key; returns its revision. Raises KeyExistsError."""

    @abc.abstractmethod
    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        """Replace a key's value if its mod_revision is `expected_revision` (0: any).

        Returns the new revision; raises KeyNotFoundError or ConflictError.
        """

    @abc.abstractmethod
    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """Delete a key; returns its last value with `mod_revision` = the delete's revision."""

    @abc.abstractmethod
    def watch(self, prefix: str, revision: int) -> Watcher:
        """Changes under `prefix` with a revision > `revision`. Raises CompactedError."""

    @abc.abstractmethod
    def end_watches(self) -> None:
        """End every open watch cleanly (at shutdown, so clients re-watch elsewhere at once)."""

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Forget history up to and including `revision`."""

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """The newest committed revision."""

    @property
    @abc.abstractmethod
    def compacted_revision(self) -> int: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


def open_datastore(url: str) -> Storage:
    """Open a datastore from a URL: `sqlite:///abs/path.db[?sync=full|normal]` or `etcd://h1:2379,h2:2379`.

    `sync=full` (the default) fsyncs every group commit, so an acknowledged write survives
    power loss and resourceVersions never go backwards; `sync=normal` skips the fsync (still
    safe against process crashes) for disks where fsync is slow.
    """
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStorage

        rest = url[len("sqlite://"):]
        path, _, query = rest.partition("?")
        opts = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if not path:
            raise ValueError(f"datastore URL {url!r} has no path")
        sync = opts.get("sync", "full")
        if sync not in ("full", "normal"):
            raise ValueError(f"datastore URL {url!r}: sync must be full or normal")
        return SQLiteStorage(path, sync=sync)
    if url.startswith("etcd://"):
        from ..storage_etcd import EtcdStorage

        return EtcdStorage.from_url(url)
    raise ValueError(f"unsupported datastore URL {url!r} (supported: sqlite:///path, etcd://host:port[,host:port...])")
