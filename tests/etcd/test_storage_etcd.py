"""EtcdStorage against the storage interface contract, on a real 3-member etcd cluster."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kubeletpy.controlplane.storage import (
    CompactedError,
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
    StorageError,
    WatchOverflowError,
)
from kubeletpy.controlplane.storage_etcd import EtcdStorage, parse_endpoints, prefix_end

from .etcdcluster import EtcdCluster

_n = itertools.count()


def run(etcd: EtcdCluster, body: Callable[[EtcdStorage, str], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        st = EtcdStorage.from_url(etcd.url)
        try:
            return await body(st, f"/t{next(_n)}-{time.time_ns()}/")
        finally:
            await st.close()

    return asyncio.run(go())


_iters: dict[int, Any] = {}


async def nxt(w: Any, timeout: float = 5.0) -> Any:
    """The watcher's next event (one iterator per watcher: a new one would close the watch)."""
    it = _iters.get(id(w))
    if it is None or it[0] is not w:
        it = _iters[id(w)] = (w, w.__aiter__())
    return await asyncio.wait_for(it[1].__anext__(), timeout)


def test_url_and_prefix_end() -> None:
    assert parse_endpoints("etcd://h1:2379,h2:2379") == ["http://h1:2379", "http://h2:2379"]
    assert parse_endpoints("etcd+https://h:2379") == ["https://h:2379"]
    with pytest.raises(ValueError):
        parse_endpoints("etcd://")
    assert prefix_end(b"/registry/pods/") == b"/registry/pods0"
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"") == b"\0"


def test_crud_and_revisions(etcd: EtcdCluster) -> None:
    async def body(st: EtcdStorage, p: str) -> None:
        r1 = await st.create(p + "x", b"1")
        r2 = await st.create(p + "y", b"2")
        assert r2 == r1 + 1 == st.revision
        with pytest.raises(KeyExistsError):
            await st.create(p + "x", b"again")
        kv = await st.get(p + "x")
        assert kv and kv.value == b"1" and kv.create_revision == kv.mod_revision == r1 and kv.key == p + "x"
        r3 = await st.update(p + "x", b"1b", r1)
        with pytest.raises(ConflictError) as e:
            await st.update(p + "x", b"stale", r1)
        assert e.value.actual == r3
        with pytest.raises(KeyNotFoundError):
            await st.update(p + "nope", b"", 0)
        with pytest.raises(KeyNotFoundError):
            await st.delete(p + "nope")
        with pytest.raises(ConflictError):
            await st.delete(p + "x", r1)
        gone = await st.delete(p + "x", r3)
        assert gone.value == b"1b" and gone.mod_revision == r3 + 1 and gone.create_revision == r1
        assert await st.get(p + "x") is None
        assert await st.update(p + "y", b"u", 0) > r3  # unconditional update of an existing key

    run(etcd, body)


def test_list_prefix_paging_and_isolation(etcd: EtcdCluster) -> None:
    async def body(st: EtcdStorage, p: str) -> None:
        await asyncio.gather(*(st.create(f"{p}ns1/p{i}", b"x") for i in range(7)))
        await st.create(f"{p}ns10/q", b"x")  # must not leak into the ns1/ prefix
        page = await st.list(f"{p}ns1/", limit=3)
        assert [kv.key[-2:] for kv in page.items] == ["p0", "p1", "p2"] and page.more
        assert page.revision == st.revision
        page2 = await st.list(f"{p}ns1/", start_after=page.items[-1].key, limit=10)
        assert len(page2.items) == 4 and not page2.more
        assert len((await st.list(f"{p}ns1/")).items) == 7
        assert await st.count(p) == 8

    run(etcd, body)


def test_concurrent_creates_get_distinct_revisions(etcd: EtcdCluster) -> None:
    async def body(st: EtcdStorage, p: str) -> None:
        revs = await asyncio.gather(*(st.create(f"{p}{i}", b"v") for i in range(50)))
        assert len(set(revs)) == 50 and max(revs) - min(revs) == 49
        res = await asyncio.gather(st.create(p + "0", b"dup"), st.create(p + "new", b"v"), return_exceptions=True)
        assert isinstance(res[0], KeyExistsError) and isinstance(res[1], int)

    run(etcd, body)


def test_watch_history_live_delete_and_future(etcd: EtcdCluster) -> None:
    async def body(st: EtcdStorage, p: str) -> None:
        r1 = await st.create(p + "pods/x", b"1")
        await st.update(p + "pods/x", b"2", 0)
        await st.create(p + "nodes/n", b"n")
        w = st.watch(p + "pods/", r1 - 1)  # history from before the pump existed: loaded from etcd
        first = await nxt(w)
        assert first.type == "PUT" and first.is_create and first.value == b"1" and first.prev_value is None
        second = await nxt(w)
        assert second.prev_value == b"1" and second.value == b"2" and not second.is_create
        rd = (await st.delete(p + "pods/x")).mod_revision
        third = await nxt(w)
        assert third.type == "DELETE" and third.value == b"2" and third.revision == rd
        assert third.create_revision == r1
        w.close()
        # from the ring: a second watcher replays the same events without going to etcd
        w2 = st.watch(p + "pods/", r1 - 1)
        assert [(await nxt(w2)).revision for _ in range(3)] == [r1, r1 + 1, rd]
        w2.close()
        # a watch from a future revision skips what is not newer
        w3 = st.watch(p, st.revision + 1)
        await st.create(p + "a", b"1")
        await st.create(p + "b", b"2")
        assert (await nxt(w3)).key == p + "b"
        w3.close()

    run(etcd, body)


def test_two_api_servers_share_revisions_and_watches(etcd: EtcdCluster) -> None:
    async def go() -> None:
        a, b = EtcdStorage.from_url(etcd.url), EtcdStorage.from_url(etcd.url)
        p = f"/shared-{time.time_ns()}/"
        try:
            await a.get("/")
            await b.get("/")
            w = b.watch(p, b.revision)
            r = await a.create(p + "k", b"v")
            ev = await nxt(w)
            assert ev.revision == r and ev.value == b"v"
            assert b.revision >= r  # b learns of a's writes through its pump
            kv = await b.get(p + "k")
            assert kv is not None and kv.mod_revision == r
            w.close()
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_end_watches_and_compaction(etcd: EtcdCluster) -> None:
    async def body(st: EtcdStorage, p: str) -> None:
        r1 = await st.create(p + "x", b"1")
        w = st.watch(p, r1)
        st.end_watches()
        assert [ev async for ev in w] == []
        await st.update(p + "x", b"2", 0)
        await st.create(p + "y", b"3")
        await st.compact(st.revision - 1)
        assert st.compacted_revision == st.revision - 1
        with pytest.raises(CompactedError):
            st.watch(p, r1)
        st.watch(p, st.revision).close()
        # another API server (no local knowledge of the compaction) is told by etcd: 410 upstairs
        other = EtcdStorage.from_url(etcd.url)
        try:
            await other.get("/")
            w2 = other.watch(p, r1 - 1)
            with pytest.raises(WatchOverflowError):
                await nxt(w2)
        finally:
            await other.close()

    run(etcd, body)


def test_member_failure_requests_and_watch_continue(etcd_fresh: EtcdCluster) -> None:
    async def go() -> None:
        st = EtcdStorage.from_url(etcd_fresh.url)
        p = "/failover/"
        try:
            await st.create(p + "before", b"1")
            w = st.watch(p, st.revision)
            first = await st.create(p + "a", b"1")
            assert (await nxt(w)).revision == first
            # kill the member we are talking to (requests and the pump's stream both use it)
            victim = st._current
            etcd_fresh.kill(victim)
            revs = []
            for i in range(20):
                revs.append(await st.create(f"{p}after{i}", b"x"))
            assert st._current != victim
            seen = [(await nxt(w, 15)).revision for _ in range(20)]
            assert seen == revs  # no gap, no duplicate across the failover
            # and the leader can die too: the remaining two elect a new one
            leader = etcd_fresh.leader()
            if leader is not None and leader != victim:
                etcd_fresh.kill(leader)
                st.retry_for = 2.0
                with pytest.raises(StorageError):  # 1 of 3 members left: no quorum, writes must fail
                    await st.create(p + "no-quorum", b"x")
            w.close()
        finally:
            await st.close()

    asyncio.run(go())


def test_hung_member_requests_fail_over_and_watch_recovers(etcd_fresh: EtcdCluster) -> None:
    """A member that hangs (SIGSTOP) keeps its TCP connections open: requests time out and move on,
    and the watchdog notices the silent watch stream and moves the pump to another member."""

    async def go() -> None:
        st = EtcdStorage(parse_endpoints(etcd_fresh.url), request_timeout=1.0)
        st.watchdog_period = 0.3
        p = "/hung/"
        try:
            await st.create(p + "before", b"1")
            w = st.watch(p, st.revision)
            first = await st.create(p + "a", b"1")
            assert (await nxt(w)).revision == first
            victim = st._current
            etcd_fresh.pause(victim)
            try:
                revs = [await st.create(f"{p}after{i}", b"x") for i in range(5)]
                seen = [(await nxt(w, 15)).revision for _ in range(5)]
                assert seen == revs
            finally:
                etcd_fresh.resume(victim)
            w.close()
        finally:
            await st.close()

    asyncio.run(go())


class _LosingProxy:
    """An etcd endpoint whose answers are lost: it hands each request to the real member
    (so the write commits) and then drops the connection without replying, which is what a
    client sees when a member hangs or the network breaks after the request went out."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.forwarded = 0
        self.then_put: tuple[str, bytes] | None = None  # another writer's change before the retry
        self.url = ""
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import aiohttp
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = await reader.readexactly(length)
            async with aiohttp.ClientSession() as s:
                async with s.post(self.upstream + path, data=body) as r:
                    await r.read()
                if self.then_put is not None:
                    k, v = self.then_put
                    async with s.post(self.upstream + "/v3/kv/put", json={
                            "key": base64.b64encode(k.encode()).decode(), "value": base64.b64encode(v).decode()}) as r:
                        await r.read()
                    self.then_put = None
            self.forwarded += 1
        finally:
            writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def test_writes_whose_answer_was_lost_are_recognised_on_retry(etcd: EtcdCluster) -> None:
    """Each write first goes to an endpoint that applies it but loses the answer; the retry on a
    healthy member then finds the write's own effect and reports success, not KeyExists/Conflict/NotFound."""

    async def go() -> None:
        members = parse_endpoints(etcd.url)
        proxy = _LosingProxy(members[0])
        await proxy.start()
        st = EtcdStorage([proxy.url, *members], request_timeout=2.0)
        p = f"/lost-{time.time_ns()}/"
        try:
            st._current = 0
            rev = await st.create(p + "x", b"v1")
            kv = await st.get(p + "x")
            assert proxy.forwarded == 1 and kv is not None and kv.value == b"v1" and kv.mod_revision == rev
            st._current = 0
            rev2 = await st.update(p + "x", b"v2", rev)
            kv = await st.get(p + "x")
            assert proxy.forwarded == 2 and kv is not None and kv.value == b"v2" and kv.mod_revision == rev2 > rev
            st._current = 0
            gone = await st.delete(p + "x", rev2)
            assert proxy.forwarded == 3 and gone.value == b"v2" and gone.mod_revision > rev2
            assert gone.create_revision == rev and await st.get(p + "x") is None
            # a real conflict behind a lost answer is still a conflict: someone else's bytes differ
            other = await st.create(p + "y", b"theirs")
            st._current = 0
            with pytest.raises(KeyExistsError):
                await st.create(p + "y", b"mine")
            st._current = 0
            with pytest.raises(ConflictError):
                await st.update(p + "y", b"mine", other - 1)
            st._current = 0
            with pytest.raises(KeyNotFoundError):
                await st.delete(p + "never")
            # the created object changed before the retry (a scheduler bound it): still ours
            proxy.then_put = (p + "z", b"bound")
            st._current = 0
            rz = await st.create(p + "z", b"created")
            kv = await st.get(p + "z")
            assert kv is not None and kv.value == b"bound" and kv.create_revision == rz
            # a lost delete conditioned on a version someone else replaced is not reported as ours
            rw = await st.create(p + "w", b"1")
            proxy.then_put = None
            await st.update(p + "w", b"2", rw)
            st._current = 0
            with pytest.raises(ConflictError):
                await st.delete(p + "w", rw)
        finally:
            await st.close()
            await proxy.close()

    asyncio.run(go())
