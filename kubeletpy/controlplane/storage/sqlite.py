"""The embedded datastore: one SQLite file in WAL mode.

Two tables:

* `kv`  -- the current value of every key (`key` primary key, so prefix lists are range scans);
* `log` -- one row per revision (put or delete, with the value and the previous revision),
  which is what watches replay from and what `compact()` trims.

The global revision is `log.rev`; it survives restarts because the rows do (and `meta`
remembers the compacted revision when the log is empty).

Writes are **group-committed**: a write queues itself and awaits a future; a batch runs
every queued write in one transaction on the event loop thread (the statements are
microseconds each), then COMMITs. With `sync=full` (the default, `synchronous=FULL`) the
COMMIT -- the WAL write and its fsync, and any checkpoint -- runs on a helper thread while
the loop keeps serving and queueing the next batch; only after it returns are the writes
acknowledged and published to watchers. So one fsync covers many requests, an
acknowledged write survives power loss, and revision order is commit order. `sync=normal`
commits inline without fsync: durable across a process crash, but power loss may drop the
last batches (never corrupting the file).

Reads use a second connection: WAL readers see only committed data and never wait for
the writer. A list reads the revision stored in `meta` inside the same read transaction,
so the list and the revision it reports always agree.

Live watchers are fed from memory (`_publish`), and a ring of recent events answers most
"watch from revision N" requests without touching the database.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import (
    CompactedError,
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    QueueWatcher,
    Storage,
    StorageError,
    Watcher,
    WatchEvent,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
  key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
  rev INTEGER PRIMARY KEY, key TEXT NOT NULL, deleted INTEGER NOT NULL, value BLOB NOT NULL,
  create_rev INTEGER NOT NULL, prev_rev INTEGER
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""

RING_SIZE = 8192           # recent events kept in memory for cheap watch resumes
CACHE_DEPTH = 256          # how many of them keep their shared decoded/encoded forms


def _prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


@dataclass(slots=True)
class _Op:
    kind: str  # create | update | delete
    key: str
    value: bytes | None
    expected: int
    fut: asyncio.Future


class _Sub(QueueWatcher):
    """One watcher, fed by the store's commit path."""

    def __init__(self, store: SQLiteStorage, prefix: str, after: int) -> None:
        super().__init__()
        self._store = store
        self.prefix = prefix
        self.after = after  # only events newer than this (a watch may start ahead of the store)

    def push(self, ev: WatchEvent) -> None:
        # `after` also drops an event already replayed from history and then published live
        if self._closed or ev.revision <= self.after:
            return
        self.after = ev.revision
        self._enqueue(ev)

    def _on_close(self) -> None:
        self._store._subs.discard(self)


class SQLiteStorage(Storage):
    def __init__(self, path: str | os.PathLike[str], sync: str = "full") -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not p.exists():
            p.touch(mode=0o600)
        self.path = p
        self._sync = sync
        self._wdb = self._connect(p)
        self._wdb.executescript(_SCHEMA)
        self._rdb = self._connect(p)
        row = self._wdb.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()
        self._compacted = int(row[0]) if row else 0
        top_log = self._wdb.execute("SELECT max(rev) FROM log").fetchone()[0] or 0
        top_kv = self._wdb.execute("SELECT max(mod_rev) FROM kv").fetchone()[0] or 0
        self._rev = max(top_log, top_kv, self._compacted)
        self._wdb.execute("INSERT OR REPLACE INTO meta VALUES ('rev', ?)", (self._rev,))
        self._pending: builtins.list[_Op] = []
        self._flush_handle: asyncio.Handle | None = None
        self._committing = False
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
        self._subs: set[_Sub] = set()
        self._ring: collections.deque[WatchEvent] = collections.deque(maxlen=RING_SIZE)
        self._closed = False

    def _connect(self, p: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self._sync == 'full' else 'NORMAL'}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-8000")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # -- reads: the read connection, committed data only

    @property
    def revision(self) -> int:
        return self._rev

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    async def get(self, key: str) -> KeyValue | None:
        row = self._rdb.execute("SELECT value, create_rev, mod_rev FROM kv WHERE key=?", (key,)).fetchone()
        return KeyValue(key, row[0], row[1], row[2]) if row else None

    async def list(self, prefix: str, *, start_after: str = "", limit: int = 0) -> ListResult:
        lo = max(prefix, start_after + "\x00") if start_after else prefix
        sql = "SELECT key, value, create_rev, mod_rev FROM kv WHERE key >= ? AND key < ? ORDER BY key"
        args: tuple = (lo, _prefix_end(prefix))
        if limit > 0:
            sql += " LIMIT ?"
            args += (limit + 1,)
        db = self._rdb
        db.execute("BEGIN")
        try:
            rev = db.execute("SELECT value FROM meta WHERE name='rev'").fetchone()[0]
            rows = db.execute(sql, args).fetchall()
        finally:
            db.execute("COMMIT")
        more = limit > 0 and len(rows) > limit
        if more:
            rows = rows[:limit]
        return ListResult([KeyValue(*r) for r in rows], max(rev, self._compacted), more)

    async def count(self, prefix: str) -> int:
        return self._rdb.execute(
            "SELECT count(*) FROM kv WHERE key >= ? AND key < ?", (prefix, _prefix_end(prefix))
        ).fetchone()[0]

    # -- writes: queued, then committed together

    def _submit(self, kind: str, key: str, value: bytes | None, expected: int) -> asyncio.Future:
        if self._closed:
            raise StorageError("datastore is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append(_Op(kind, key, value, expected, fut))
        self._schedule(loop)
        return fut

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flush_handle is None and not self._committing:
            self._flush_handle = loop.call_soon(self._flush)

    async def create(self, key: str, value: bytes) -> int:
        return await self._submit("create", key, value, 0)

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        return await self._submit("update", key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        return await self._submit("delete", key, None, expected_revision)

    async def compact(self, revision: int) -> None:
        await self._submit("compact", "", None, revision)

    def _apply(self, op: _Op, rev: int) -> tuple[object, WatchEvent | None]:
        db = self._wdb
        if op.kind == "compact":
            upto = min(op.expected, rev - 1)
            if upto > self._compacted:
                db.execute("DELETE FROM log WHERE rev <= ?", (upto,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('compacted', ?)", (upto,))
            return max(upto, self._compacted), None
        row = db.execute("SELECT value, create_rev, mod_rev FROM kv WHERE key=?", (op.key,)).fetchone()
        if op.kind == "create":
            if row:
                raise KeyExistsError(op.key)
            db.execute("INSERT INTO kv VALUES (?,?,?,?)", (op.key, op.value, rev, rev))
            db.execute("INSERT INTO log VALUES (?,?,0,?,?,NULL)", (rev, op.key, op.value, rev))
            return rev, WatchEvent("PUT", op.key, op.value, rev, rev, None)  # type: ignore[arg-type]
        if not row:
            raise KeyNotFoundError(op.key)
        old_value, create_rev, mod_rev = row
        if op.expected and op.expected != mod_rev:
            raise ConflictError(op.key, op.expected, mod_rev)
        if op.kind == "update":
            db.execute("UPDATE kv SET value=?, mod_rev=? WHERE key=?", (op.value, rev, op.key))
            db.execute("INSERT INTO log VALUES (?,?,0,?,?,?)", (rev, op.key, op.value, create_rev, mod_rev))
            return rev, WatchEvent("PUT", op.key, op.value, rev, create_rev, old_value)  # type: ignore[arg-type]
        db.execute("DELETE FROM kv WHERE key=?", (op.key,))
        db.execute("INSERT INTO log VALUES (?,?,1,?,?,?)", (rev, op.key, old_value, create_rev, mod_rev))
        return KeyValue(op.key, old_value, create_rev, rev), WatchEvent(
            "DELETE", op.key, old_value, rev, create_rev, old_value
        )

    def _flush(self) -> None:
        """Run every queued write in one transaction; hand the COMMIT to the committer thread."""
        self._flush_handle = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        rev = self._rev
        compacted = self._compacted
        events: builtins.list[WatchEvent] = []
        outcomes: builtins.list[tuple[asyncio.Future, object, BaseException | None]] = []
        db = self._wdb
        try:
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                try:
                    result, ev = self._apply(op, rev + 1)
                except StorageError as e:
                    outcomes.append((op.fut, None, e))
                    continue
                if ev is None:
                    compacted = int(result)  # type: ignore[call-overload]
                else:
                    rev += 1
                    events.append(ev)
                outcomes.append((op.fut, result, None))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('rev', ?)", (rev,))
        except sqlite3.Error as e:
            self._fail(batch, e)
            return
        if self._sync != "full":
            try:
                db.execute("COMMIT")
            except sqlite3.Error as e:
                self._fail(batch, e)
                return
            self._done(rev, compacted, events, outcomes)
            return
        self._committing = True
        loop = asyncio.get_running_loop()
        commit = loop.run_in_executor(self._committer, db.execute, "COMMIT")

        def committed(f: asyncio.Future) -> None:
            self._committing = False
            if f.cancelled() or f.exception() is not None:
                self._fail(batch, f.exception() or sqlite3.OperationalError("commit cancelled"))
            else:
                self._done(rev, compacted, events, outcomes)
            if self._pending:
                self._schedule(loop)

        commit.add_done_callback(committed)

    def _fail(self, batch: builtins.list[_Op], e: BaseException) -> None:
        if self._wdb.in_transaction:
            self._wdb.execute("ROLLBACK")
        err = StorageError(f"datastore write failed: {e}")
        for op in batch:
            if not op.fut.done():
                op.fut.set_exception(err)

    def _done(self, rev: int, compacted: int, events: builtins.list[WatchEvent],
              outcomes: builtins.list[tuple[asyncio.Future, object, BaseException | None]]) -> None:
        self._rev = rev
        self._compacted = compacted
        for ev in events:
            self._publish(ev)
        for fut, result, failure in outcomes:
            if fut.done():
                continue
            if failure is not None:
                fut.set_exception(failure)
            else:
                fut.set_result(result)

    def _publish(self, ev: WatchEvent) -> None:
        ring = self._ring
        ring.append(ev)
        if len(ring) > CACHE_DEPTH:
            # decoded/encoded forms are for the fan-out of fresh events; older ones keep only bytes
            ring[-CACHE_DEPTH - 1].cache.clear()
        for sub in tuple(self._subs):
            if ev.key.startswith(sub.prefix):
                sub.push(ev)

    # -- watch

    def watch(self, prefix: str, revision: int) -> Watcher:
        if revision < self._compacted:
            raise CompactedError(revision, self._compacted)
        sub = _Sub(self, prefix, revision)
        if revision < self._rev:
            for ev in self._history(prefix, revision):
                sub.push(ev)
        self._subs.add(sub)
        return sub

    def _history(self, prefix: str, revision: int) -> builtins.list[WatchEvent]:
        ring = self._ring
        if ring and ring[0].revision <= revision + 1:
            skip = revision + 1 - ring[0].revision
            return [ev for i, ev in enumerate(ring) if i >= skip and ev.key.startswith(prefix)]
        rows = self._rdb.execute(
            "SELECT l.rev, l.key, l.deleted, l.value, l.create_rev, p.value FROM log l "
            "LEFT JOIN log p ON p.rev = l.prev_rev "
            "WHERE l.rev > ? AND l.key >= ? AND l.key < ? ORDER BY l.rev",
            (revision, prefix, _prefix_end(prefix)),
        ).fetchall()
        out = []
        for rev, key, deleted, value, create_rev, prev in rows:
            if deleted:
                out.append(WatchEvent("DELETE", key, value, rev, create_rev, value))
            else:
                out.append(WatchEvent("PUT", key, value, rev, create_rev, prev))
        return out

    def end_watches(self) -> None:
        for sub in tuple(self._subs):
            sub.close()

    async def close(self) -> None:
        if self._closed:
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        while self._committing or self._pending:
            if not self._committing:
                self._flush()
            await asyncio.sleep(0.001)
        self._closed = True
        self.end_watches()
        self._committer.shutdown(wait=True)
        self._wdb.close()
        self._rdb.close()
