"""The SQLite datastore against the storage interface contract (what an etcd backend must also do).

SQLite-only by nature (the state.db file, `sqlite://` URLs, sync modes, reopening the same file);
the etcd backend's run of the same contract is tests/etcd/test_storage_etcd.py, and every API test
in this directory runs on both backends (the `backend` fixture in conftest.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kubeletpy.controlplane.storage import (
    CompactedError,
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
    open_datastore,
)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_crud_and_revisions(tmp_path: Path, sync: str) -> None:
    async def go() -> None:
        st = open_datastore(f"sqlite://{tmp_path}/s.db?sync={sync}")
        r1 = await st.create("/registry/pods/a/x", b"1")
        r2 = await st.create("/registry/pods/a/y", b"2")
        assert r2 == r1 + 1 == st.revision
        with pytest.raises(KeyExistsError):
            await st.create("/registry/pods/a/x", b"again")
        kv = await st.get("/registry/pods/a/x")
        assert kv and kv.value == b"1" and kv.create_revision == kv.mod_revision == r1
        r3 = await st.update("/registry/pods/a/x", b"1b", r1)
        with pytest.raises(ConflictError):
            await st.update("/registry/pods/a/x", b"stale", r1)
        with pytest.raises(KeyNotFoundError):
            await st.update("/registry/pods/a/nope", b"", 0)
        gone = await st.delete("/registry/pods/a/x")
        assert gone.value == b"1b" and gone.mod_revision == r3 + 1
        assert await st.get("/registry/pods/a/x") is None
        await st.close()

    run(go())


def test_list_prefix_paging_and_isolation(tmp_path: Path) -> None:
    async def go() -> None:
        st = open_datastore(f"sqlite://{tmp_path}/s.db")
        for i in range(7):
            await st.create(f"/registry/pods/ns1/p{i}", b"x")
        await st.create("/registry/pods/ns10/q", b"x")  # must not leak into the ns1/ prefix
        page = await st.list("/registry/pods/ns1/", limit=3)
        assert [kv.key[-2:] for kv in page.items] == ["p0", "p1", "p2"] and page.more
        page2 = await st.list("/registry/pods/ns1/", start_after=page.items[-1].key, limit=10)
        assert len(page2.items) == 4 and not page2.more
        assert await st.count("/registry/pods/") == 8
        await st.close()

    run(go())


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_group_commit_assigns_consecutive_revisions(tmp_path: Path, sync: str) -> None:
    async def go() -> None:
        st = open_datastore(f"sqlite://{tmp_path}/s.db?sync={sync}")
        revs = await asyncio.gather(*(st.create(f"/k/{i}", b"v") for i in range(50)))
        assert sorted(revs) == list(range(1, 51))
        # conflicts inside one batch fail alone
        res = await asyncio.gather(st.create("/k/0", b"dup"), st.create("/k/new", b"v"), return_exceptions=True)
        assert isinstance(res[0], KeyExistsError) and res[1] == 51
        # a list taken while writes are in flight reports the revision its rows were read at
        writes = [asyncio.ensure_future(st.create(f"/m/{i}", b"v")) for i in range(20)]
        await asyncio.sleep(0)
        page = await st.list("/m/")
        assert len(page.items) == page.revision - 51
        await asyncio.gather(*writes)
        await st.close()

    run(go())


def test_watch_history_live_and_compaction(tmp_path: Path) -> None:
    async def go() -> None:
        st = open_datastore(f"sqlite://{tmp_path}/s.db")
        r1 = await st.create("/registry/pods/a/x", b"1")
        await st.update("/registry/pods/a/x", b"2", 0)
        await st.create("/registry/nodes/n", b"n")
        w = st.watch("/registry/pods/", r1 - 1)
        it = w.__aiter__()
        first = await it.__anext__()
        assert first.type == "PUT" and first.is_create and first.value == b"1"
        second = await it.__anext__()
        assert second.prev_value == b"1" and second.value == b"2"
        await st.delete("/registry/pods/a/x")
        third = await asyncio.wait_for(it.__anext__(), 2)
        assert third.type == "DELETE" and third.value == b"2"
        w.close()
        await st.compact(st.revision - 1)
        with pytest.raises(CompactedError):
            st.watch("/registry/pods/", r1)
        st.watch("/registry/pods/", st.revision).close()
        await st.close()

    run(go())


def test_restart_keeps_data_revision_and_history(tmp_path: Path) -> None:
    async def first() -> int:
        st = open_datastore(f"sqlite://{tmp_path}/s.db")
        await st.create("/a", b"1")
        r = await st.update("/a", b"2", 0)
        await st.close()
        return r

    async def second(r: int) -> None:
        st = open_datastore(f"sqlite://{tmp_path}/s.db")
        assert st.revision == r
        kv = await st.get("/a")
        assert kv and kv.value == b"2" and kv.mod_revision == r
        w = st.watch("/", r - 1)  # history survives: replayed from the log table
        ev = await w.__aiter__().__anext__()
        assert ev.value == b"2" and ev.prev_value == b"1"
        w.close()
        assert await st.create("/b", b"x") == r + 1
        await st.close()

    run(second(run(first())))


def test_unsupported_url() -> None:
    with pytest.raises(ValueError):
        open_datastore("mysql://127.0.0.1:3306/k8s")
    with pytest.raises(ValueError):
        open_datastore("sqlite:///tmp/x.db?sync=sometimes")


def test_watch_from_future_revision_skips_older_events(tmp_path: Path) -> None:
    async def go() -> None:
        st = open_datastore(f"sqlite://{tmp_path}/s.db")
        w = st.watch("/", st.revision + 1)
        await st.create("/a", b"1")  # revision 1: not newer than 1
        await st.create("/b", b"2")  # revision 2
        ev = await asyncio.wait_for(w.__aiter__().__anext__(), 2)
        assert ev.key == "/b"
        w.close()
        await st.close()

    run(go())
