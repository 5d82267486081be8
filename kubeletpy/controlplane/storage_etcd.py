"""The etcd v3 datastore: `--datastore etcd://h1:2379,h2:2379,h3:2379`.

Why the JSON gateway and not a gRPC client: etcd serves its v3 API as JSON over plain
HTTP at `/v3/kv/range`, `/v3/kv/txn`, `/v3/kv/compaction` and `/v3/watch` (keys and
values base64, int64s as strings). aiohttp -- already the API server's HTTP stack --
talks to it directly; the PyPI etcd clients are stale or pull in a second gRPC stack.

Mapping of the storage interface (see `storage/__init__.py`), one etcd call each:

* `get`/`list`/`count` -> Range (`count_only` for count; `limit` + `more` for pages);
* `create`  -> Txn(if create_revision(key) == 0 then Put);
* `update`  -> Txn(if mod_revision(key) == expected [or key exists] then Put else Range);
* `delete`  -> Txn(if ... then DeleteRange(prev_kv) else Range);
* `compact` -> Compaction; etcd's revision *is* the resourceVersion, so several API
  servers on one etcd agree on every resourceVersion.

**Watches.** One etcd watch stream per API server (the "pump", on the whole keyspace,
with `prev_kv`) feeds every registry watcher from memory and a ring of recent events, so
a thousand kubectl/informer watches cost one etcd stream. It also keeps `revision` fresh
when *other* API servers write. A watcher that asks for history older than the ring gets
it from a one-off etcd watch started at its revision, read up to where the pump was, then
switched to the live feed. History etcd has compacted away ends the watch with
WatchOverflowError, which the registry turns into a 410 (the client re-lists).

**Failover.** Requests go to one endpoint; a connection error, timeout or 5xx (no leader,
leader changed) moves to the next endpoint and retries for up to `retry_for` seconds, and
the pump re-opens its stream on another endpoint from the last revision it delivered, so
a watcher sees no gap and no duplicate when one member dies. A member that hangs or is cut
off without closing connections is caught by a watchdog (newer revisions seen through
requests, but the pump has not moved for two periods) and left the same way.

**Ambiguous writes.** A write whose answer was lost (timeout, dropped connection, "leader
changed") may still be committed, by the member that went quiet or by a new leader that
inherits the proposal. Its retry then finds its own effect: the key exists, or has moved on.
The retry's failure branch reads the key back; if the stored bytes are the ones this write
put there, at a revision newer than anything seen before the first attempt, the write
succeeded and is reported so (API objects carry a uid and timestamps, so equal bytes mean
this write); a create whose object has changed since is compared as of its create revision.
A delete looks for its own DELETE in etcd's history of the key (a one-off watch), of the
version it was conditioned on.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .storage import (
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

log = logging.getLogger("kubeletpy.controlplane.storage_etcd")

RING_SIZE = 8192
_RETRYABLE_CODES = {4, 14}  # gRPC DeadlineExceeded, Unavailable (no leader, leader changed, timeout)
_COMPACTED_CODE = 11        # gRPC OutOfRange: "mvcc: required revision has been compacted"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _key(s: str) -> str:
    return _b64(s.encode())


def _unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (etcd's range_end)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"  # no upper bound: the whole keyspace


def parse_endpoints(url: str) -> list[str]:
    """`etcd://h1:2379,h2:2379` (or `etcd+https://...`) -> base URLs."""
    scheme = "http"
    if url.startswith("etcd+https://"):
        scheme, rest = "https", url[len("etcd+https://"):]
    elif url.startswith("etcd://"):
        rest = url[len("etcd://"):]
    else:
        raise ValueError(f"not an etcd URL: {url!r}")
    rest = rest.split("?", 1)[0].strip("/")
    eps = [f"{scheme}://{h.strip()}" for h in rest.split(",") if h.strip()]
    if not eps:
        raise ValueError(f"etcd URL {url!r} names no endpoints")
    return eps


class _EtcdError(StorageError):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"etcd: {message} (HTTP {status}, code {code})")
        self.status, self.code, self.message = status, code, message


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(_unb64(d.get("key")).decode(), _unb64(d.get("value")), int(d.get("create_revision") or 0),
                    int(d.get("mod_revision") or 0))


def _event(e: dict[str, Any]) -> WatchEvent:
    kv = e.get("kv") or {}
    prev = e.get("prev_kv")
    key = _unb64(kv.get("key")).decode()
    rev = int(kv.get("mod_revision") or 0)
    prev_value = _unb64(prev.get("value")) if prev else None
    if e.get("type") == "DELETE":
        create = int((prev or {}).get("create_revision") or 0)
        return WatchEvent("DELETE", key, prev_value or b"", rev, create, prev_value)
    return WatchEvent("PUT", key, _unb64(kv.get("value")), rev, int(kv.get("create_revision") or 0), prev_value)


class _Sub(QueueWatcher):
    """One registry watcher, fed by the pump (and first by a history loader when needed)."""

    overflow_message = "watch history is compacted or the watcher fell behind"

    def __init__(self, store: EtcdStorage, prefix: str, after: int) -> None:
        super().__init__()
        self._store = store
        self.prefix = prefix
        self.after = after              # deliver only revisions > after
        self.loading = False            # history being fetched: park live events in `held`
        self.held: list[WatchEvent] = []
        self.loader: asyncio.Task | None = None

    def push(self, ev: WatchEvent) -> None:
        if self._closed or ev.revision <= self.after or not ev.key.startswith(self.prefix):
            return
        if self.loading:
            self.held.append(ev)
            return
        self._deliver(ev)

    def _deliver(self, ev: WatchEvent) -> None:
        if ev.revision > self.after:
            self.after = ev.revision
        self._enqueue(ev)

    def finish_loading(self, history: list[WatchEvent]) -> None:
        self.loading = False
        for ev in history:
            if ev.revision > self.after:
                self._deliver(ev)
        held, self.held = self.held, []
        for ev in held:
            if ev.revision > self.after:
                self._deliver(ev)

    def _on_close(self) -> None:
        self._store._subs.discard(self)
        if self.loader is not None:
            self.loader.cancel()


class EtcdStorage(Storage):
    def __init__(self, endpoints: list[str], *, request_timeout: float = 5.0, retry_for: float = 20.0) -> None:
        self.endpoints = endpoints
        self.request_timeout = request_timeout
        self.retry_for = retry_for
        self._current = 0     # endpoint for requests
        self._watch_ep = 0    # endpoint of the pump's stream (moves independently)
        self._session: aiohttp.ClientSession | None = None
        self._rev = 0
        self._compacted = 0
        self._subs: set[_Sub] = set()
        self._ring: collections.deque[WatchEvent] = collections.deque(maxlen=RING_SIZE)
        self._pump_task: asyncio.Task | None = None
        self._watchdog_task: asyncio.Task | None = None
        self._stream_task: asyncio.Task | None = None
        self._kicked = False
        self.watchdog_period = 2.0
        self._pump_rev = 0
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> EtcdStorage:
        return cls(parse_endpoints(url))

    # ------------------------------------------------------------------ transport with failover

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30))
        return self._session

    def _seen(self, header: dict[str, Any] | None) -> None:
        rev = int((header or {}).get("revision") or 0)
        if rev > self._rev:
            self._rev = rev

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return (await self._request(path, body))[0]

    async def _request(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Send to the current endpoint, failing over; also say whether an earlier attempt
        may have been applied although its answer never came."""
        if self._closed:
            raise StorageError("datastore is closed")
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        last: Exception | None = None
        ambiguous = False
        while True:
            ep = self.endpoints[self._current]
            try:
                async with self._sess().post(ep + path, json=body, timeout=aiohttp.ClientTimeout(
                        total=self.request_timeout)) as r:
                    raw = await r.read()
                    status = r.status
                data = json.loads(raw) if raw else {}
                if status == 200:
                    self._seen(data.get("header"))
                    return data, ambiguous
                err = _EtcdError(status, int(data.get("code") or 0), str(data.get("message") or data.get("error")))
                if status < 500 and err.code not in _RETRYABLE_CODES:
                    raise err
                last = err
                ambiguous = True  # "request timed out" / "leader changed" may still commit
            except aiohttp.ClientConnectorError as e:
                last = e  # never sent
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                last = e
                ambiguous = True
            self._current = (self._current + 1) % len(self.endpoints)
            if time.monotonic() > deadline:
                raise StorageError(f"etcd unavailable at {', '.join(self.endpoints)}: {last}")
            if self._current == 0:  # went round every endpoint: back off a little
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # ------------------------------------------------------------------ reads

    @property
    def revision(self) -> int:
        return self._rev

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    async def get(self, key: str) -> KeyValue | None:
        data = await self._call("/v3/kv/range", {"key": _key(key)})
        kvs = data.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def list(self, prefix: str, *, start_after: str = "", limit: int = 0) -> ListResult:
        start = (start_after.encode() + b"\0") if start_after else prefix.encode()
        if start < prefix.encode():
            start = prefix.encode()
        body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(prefix_end(prefix.encode()))}
        if limit > 0:
            body["limit"] = limit
        data = await self._call("/v3/kv/range", body)
        items = [_kv(d) for d in data.get("kvs") or []]
        return ListResult(items, int((data.get("header") or {}).get("revision") or self._rev), bool(data.get("more")))

    async def count(self, prefix: str) -> int:
        data = await self._call("/v3/kv/range", {"key": _key(prefix), "range_end": _b64(prefix_end(prefix.encode())),
                                                 "count_only": True})
        return int(data.get("count") or 0)

    # ------------------------------------------------------------------ writes

    async def _txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                   failure: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        return await self._request("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure})

    @staticmethod
    def _current_kv(data: dict[str, Any]) -> dict[str, Any] | None:
        resp = (data.get("responses") or [{}])[0].get("response_range") or {}
        return (resp.get("kvs") or [None])[0]

    def _own_put(self, data: dict[str, Any], ambiguous: bool, value: bytes, after: int) -> int:
        """The revision of this write if a lost answer hid its success, else 0."""
        kv = self._current_kv(data) if ambiguous else None
        if kv and int(kv.get("mod_revision") or 0) > after and _unb64(kv.get("value")) == value:
            return int(kv["mod_revision"])
        return 0

    async def create(self, key: str, value: bytes) -> int:
        k = _key(key)
        before = self._rev
        data, ambiguous = await self._txn(
            [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": {"key": k, "value": _b64(value)}}], [{"request_range": {"key": k}}])
        if not data.get("succeeded"):
            kv = self._current_kv(data)
            created = int((kv or {}).get("create_revision") or 0)
            if ambiguous and created > before:
                if self._own_put(data, ambiguous, value, before):
                    return int(kv["mod_revision"])  # type: ignore[index]
                # changed since (bound, status written): compare the version our create would have made
                if await self._value_at(k, created) == value:
                    return created
            raise KeyExistsError(key)
        return int(data["header"]["revision"])

    async def _value_at(self, k: str, revision: int) -> bytes | None:
        """The key's value as of `revision` (None if compacted away or absent)."""
        try:
            data = await self._call("/v3/kv/range", {"key": k, "revision": str(revision)})
        except StorageError:
            return None
        kvs = data.get("kvs") or []
        return _unb64(kvs[0].get("value")) if kvs else None

    def _guard(self, k: str, expected: int) -> dict[str, Any]:
        if expected:
            return {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(expected)}
        return {"key": k, "target": "CREATE", "result": "GREATER", "create_revision": "0"}

    def _failed(self, key: str, expected: int, data: dict[str, Any]) -> StorageError:
        kv = self._current_kv(data)
        if not kv:
            return KeyNotFoundError(key)
        return ConflictError(key, expected, int(kv.get("mod_revision") or 0))

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        k = _key(key)
        before = self._rev
        data, ambiguous = await self._txn([self._guard(k, expected_revision)],
                                          [{"request_put": {"key": k, "value": _b64(value)}}],
                                          [{"request_range": {"key": k}}])
        if not data.get("succeeded"):
            rev = self._own_put(data, ambiguous, value, max(before, expected_revision))
            if rev:
                return rev
            raise self._failed(key, expected_revision, data)
        return int(data["header"]["revision"])

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        k = _key(key)
        before = self._rev
        data, ambiguous = await self._txn([self._guard(k, expected_revision)],
                                          [{"request_delete_range": {"key": k, "prev_kv": True}}],
                                          [{"request_range": {"key": k}}])
        if not data.get("succeeded"):
            if ambiguous and not self._current_kv(data):
                now = int((data.get("header") or {}).get("revision") or 0)
                own = await self._own_delete(key, before, now, expected_revision)
                if own is not None:
                    return own
            raise self._failed(key, expected_revision, data)
        resp = (data.get("responses") or [{}])[0].get("response_delete_range") or {}
        prev = (resp.get("prev_kvs") or [{}])[0]
        return KeyValue(key, _unb64(prev.get("value")), int(prev.get("create_revision") or 0),
                        int(data["header"]["revision"]))

    async def _own_delete(self, key: str, after: int, now: int, expected: int = 0) -> KeyValue | None:
        """A delete whose answer was lost: etcd's history of the key since the first attempt
        holds its DELETE (with the value it removed) -- of the version it was conditioned on,
        if it was: a later version deleted by someone else is not ours."""
        async def first_delete() -> KeyValue | None:
            then = await self._call("/v3/kv/range", {"key": _key(key), "revision": str(after), "count_only": True})
            if not int(then.get("count") or 0):
                return None  # it was not there before this delete began: plainly not found
            async for res in self._stream({"key": _key(key)}, after + 1, self._current):
                if res.get("canceled"):
                    return None
                for e in res.get("events") or []:
                    ev = _event(e)
                    if ev.revision > now:
                        return None
                    if ev.type == "DELETE" and ev.prev_value is not None:
                        if expected and int((e.get("prev_kv") or {}).get("mod_revision") or 0) != expected:
                            return None
                        return KeyValue(key, ev.prev_value, ev.create_revision, ev.revision)
            return None

        try:
            return await asyncio.wait_for(first_delete(), self.request_timeout)
        except (TimeoutError, aiohttp.ClientError, OSError, StorageError, ValueError):
            return None

    async def compact(self, revision: int) -> None:
        revision = min(revision, self._rev)
        if revision <= self._compacted:
            return
        try:
            await self._call("/v3/kv/compaction", {"revision": str(revision)})
        except _EtcdError as e:
            if e.code != _COMPACTED_CODE:  # another API server compacted further already
                raise
        self._compacted = revision

    # ------------------------------------------------------------------ watch

    async def _stream(self, body: dict[str, Any], start_revision: int,
                      endpoint: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """One etcd watch stream's messages (`result` objects), by default from the requests' endpoint."""
        ep = self.endpoints[self._current if endpoint is None else endpoint]
        req = {"create_request": {**body, "start_revision": str(start_revision), "prev_kv": True}}
        async with self._sess().post(ep + "/v3/watch", json=req, timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.request_timeout)) as r:
            if r.status != 200:
                raise _EtcdError(r.status, 0, (await r.read()).decode(errors="replace"))
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                while (nl := buf.find(b"\n")) >= 0:
                    line, buf = buf[:nl], buf[nl + 1:]
                    if line.strip():
                        msg = json.loads(line)
                        if "error" in msg:
                            raise _EtcdError(int((msg["error"] or {}).get("http_code") or 503), 14,
                                             str(msg["error"]))
                        yield msg.get("result") or {}
        raise ConnectionResetError("etcd closed the watch stream")

    def _ensure_pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_rev = self._rev
            self._watch_ep = self._current
            loop = asyncio.get_running_loop()
            self._pump_task = loop.create_task(self._pump(), name="etcd-watch-pump")
            if self._watchdog_task is None or self._watchdog_task.done():
                self._watchdog_task = loop.create_task(self._watchdog(), name="etcd-watch-watchdog")

    async def _watchdog(self) -> None:
        """Catch a stalled pump: its member is alive but cut off (hung, or partitioned without quorum),
        so the stream neither breaks nor delivers while writes through other members go on. When newer
        revisions have been seen for two periods and the pump has not moved, drop its connection; the
        pump then resumes on the next endpoint."""
        stuck_at: int | None = None
        while not self._closed:
            await asyncio.sleep(self.watchdog_period)
            if self._rev > self._pump_rev:
                if stuck_at == self._pump_rev and self._stream_task is not None and not self._stream_task.done():
                    log.warning("etcd watch on %s stalled at revision %d (seen %d); switching endpoint",
                                self.endpoints[self._watch_ep], self._pump_rev, self._rev)
                    self._kicked = True
                    self._stream_task.cancel()
                    stuck_at = None
                    continue
                stuck_at = self._pump_rev
            else:
                stuck_at = None

    async def _pump(self) -> None:
        """The one watch on the whole keyspace: fan events out, follow endpoint failover."""
        delay = 0.05
        while self._pump_rev == 0:  # nothing read yet: start from now, not from the beginning of time
            try:
                await self.get("/")
            except StorageError as e:
                log.warning("etcd: %s; retrying", e)
                await asyncio.sleep(1.0)
            self._pump_rev = self._rev
            for sub in tuple(self._subs):  # watchers that registered meanwhile get their history loaded
                if sub.after < self._pump_rev and not sub.loading:
                    sub.loading = True
                    sub.loader = asyncio.get_running_loop().create_task(
                        self._load_history(sub, sub.after, self._pump_rev))
        while not self._closed:
            self._kicked = False
            self._stream_task = asyncio.get_running_loop().create_task(self._consume())
            try:
                await self._stream_task
                delay = 0.05
                continue  # compaction handled: re-watch from the new position
            except asyncio.CancelledError:
                if not self._kicked:
                    self._stream_task.cancel()
                    raise
                why: BaseException = TimeoutError("no events while newer revisions exist")
            except Exception as e:  # connection to this member lost: resume on the next one
                why = e
            log.info("etcd watch on %s broke (%s); resuming at revision %d on the next endpoint",
                     self.endpoints[self._watch_ep], why, self._pump_rev + 1)
            # the requests' endpoint answered most recently: move there, or round-robin if it is this one
            if self._current != self._watch_ep:
                self._watch_ep = self._current
            else:
                self._watch_ep = (self._watch_ep + 1) % len(self.endpoints)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _consume(self) -> None:
        """Read one pump stream until it breaks (raises) or etcd says we are compacted (returns)."""
        async for res in self._stream({"key": _b64(b"\0"), "range_end": _b64(b"\0")}, self._pump_rev + 1,
                                      self._watch_ep):
            if res.get("compact_revision") and res.get("canceled"):
                self._compacted = max(self._compacted, int(res["compact_revision"]) - 1)
                log.warning("etcd compacted past our watch (%s); watchers must re-list", res["compact_revision"])
                for sub in tuple(self._subs):
                    sub.overflow()
                self._ring.clear()
                self._pump_rev = max(self._pump_rev, int(res["compact_revision"]) - 1)
                await self.get("/")  # refresh the current revision
                self._pump_rev = max(self._pump_rev, self._rev)
                return
            self._seen(res.get("header"))
            for e in res.get("events") or []:
                self._publish(_event(e))

    def _publish(self, ev: WatchEvent) -> None:
        if ev.revision > self._pump_rev:
            self._pump_rev = ev.revision
        if ev.revision > self._rev:
            self._rev = ev.revision
        self._ring.append(ev)
        for sub in tuple(self._subs):
            sub.push(ev)

    def watch(self, prefix: str, revision: int) -> Watcher:
        if revision < self._compacted:
            raise CompactedError(revision, self._compacted)
        if self._closed:
            raise StorageError("datastore is closed")
        self._ensure_pump()
        sub = _Sub(self, prefix, revision)
        self._subs.add(sub)
        if revision < self._pump_rev:
            ring = self._ring
            if ring and ring[0].revision <= revision + 1:
                for ev in ring:
                    sub.push(ev)
            else:
                sub.loading = True
                sub.loader = asyncio.get_running_loop().create_task(self._load_history(sub, revision,
                                                                                       self._pump_rev))
        return sub

    async def _load_history(self, sub: _Sub, revision: int, upto: int) -> None:
        """Events (revision, upto] under the watcher's prefix, from a one-off etcd watch on every key.

        Every etcd revision after the first is some write, so the stream reaches `upto` even when no
        key under the prefix changed; then the watcher switches to the live events it was holding.
        """
        history: list[WatchEvent] = []
        if upto <= max(revision, 1):
            sub.finish_loading(history)
            return
        try:
            async for res in self._stream({"key": _b64(b"\0"), "range_end": _b64(b"\0")}, revision + 1):
                if res.get("compact_revision") and res.get("canceled"):
                    self._compacted = max(self._compacted, int(res["compact_revision"]) - 1)
                    sub.overflow()
                    return
                done = False
                for e in res.get("events") or []:
                    ev = _event(e)
                    if ev.revision > upto:
                        done = True
                        break
                    if ev.key.startswith(sub.prefix):
                        history.append(ev)
                    if ev.revision == upto:
                        done = True
                if done:
                    break
            sub.finish_loading(history)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("loading watch history from %d failed: %s", revision, e)
            sub.overflow()

    def end_watches(self) -> None:
        for sub in tuple(self._subs):
            sub.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.end_watches()
        for t in (self._pump_task, self._watchdog_task, self._stream_task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._session is not None:
            await self._session.close()
