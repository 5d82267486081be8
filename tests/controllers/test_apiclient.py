"""kubeletpy.apiclient against the real API server: kubeconfig, TLS, errors, list paging,
watch resume and 410 handling in the informer."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cluster import ControlPlane, Loop, free_ns, wait_for

from kubeletpy.apiclient import (
    CONFIGMAPS,
    NAMESPACES,
    AlreadyExistsError,
    Client,
    ConflictError,
    Informer,
    NotFoundError,
    TransportError,
    load_kubeconfig,
)


def test_kubeconfig_files_and_tls_verification(cp: ControlPlane, loop: Loop, tmp_path: Path) -> None:
    cfg = yaml.safe_load(cp.kubeconfig.read_text())
    (tmp_path / "ca.pem").write_bytes(base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]))
    (tmp_path / "token").write_text(cfg["users"][0]["user"]["token"] + "\n")
    cfg["clusters"][0]["cluster"].pop("certificate-authority-data")
    cfg["clusters"][0]["cluster"]["certificate-authority"] = "ca.pem"  # relative to the kubeconfig
    cfg["users"][0]["user"] = {"tokenFile": str(tmp_path / "token")}
    cfg["contexts"][0]["context"]["namespace"] = "kube-system"
    (tmp_path / "kc").write_text(yaml.safe_dump(cfg))
    cc = load_kubeconfig(tmp_path / "kc")
    assert cc.server == cp.url and cc.namespace == "kube-system" and cc.token == cfg_token(cp)
    ok = loop.call(_get_ns(Client(cc)))
    assert ok["metadata"]["name"] == "default"
    # a client that does not trust the cluster CA must refuse the connection
    cc.ca_pem = b""
    with pytest.raises(TransportError):
        loop.call(_get_ns(Client(cc)))


def cfg_token(cp: ControlPlane) -> str:
    return yaml.safe_load(cp.kubeconfig.read_text())["users"][0]["user"]["token"]


async def _get_ns(c: Client) -> dict[str, Any]:
    try:
        return await c.get(NAMESPACES, "default")
    finally:
        await c.close()


def test_verbs_errors_and_paging(cp: ControlPlane, loop: Loop) -> None:
    ns = cp.namespace(free_ns())
    c = loop.client(cp)

    async def go() -> None:
        made = await c.create(CONFIGMAPS, {"metadata": {"name": "a"}, "data": {"k": "v"}}, ns)
        with pytest.raises(AlreadyExistsError):
            await c.create(CONFIGMAPS, {"metadata": {"name": "a"}}, ns)
        with pytest.raises(NotFoundError):
            await c.get(CONFIGMAPS, "nope", ns)
        made["data"]["k"] = "v2"
        upd = await c.update(CONFIGMAPS, made)
        with pytest.raises(ConflictError):
            await c.update(CONFIGMAPS, made)  # stale resourceVersion
        p = await c.patch(CONFIGMAPS, "a", {"data": {"x": "y"}}, ns)
        assert p["data"] == {"k": "v2", "x": "y"} and int(p["metadata"]["resourceVersion"]) > int(
            upd["metadata"]["resourceVersion"])
        await asyncio.gather(*(c.create(CONFIGMAPS, {"metadata": {"name": f"m{i:03d}"}}, ns) for i in range(12)))
        lst = await c.list(CONFIGMAPS, ns, page_size=5)  # three pages, stitched together
        assert len(lst["items"]) == 13 and lst["metadata"]["resourceVersion"]
        await c.delete(CONFIGMAPS, "a", ns)
        with pytest.raises(NotFoundError):
            await c.delete(CONFIGMAPS, "a", ns)

    loop.call(go())


def test_informer_resumes_and_relists_after_410(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path, ["--compaction-interval", "0.3"]).start()
    loop = Loop()
    try:
        ns = cp.namespace(free_ns())
        for n in ("one", "two"):
            cp.req("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": n}})
        c = loop.client(cp)
        seen: list[tuple[str, str]] = []

        async def make() -> Informer:
            inf = Informer(c, CONFIGMAPS, ns)
            inf.add_handlers(lambda o: seen.append(("add", o["metadata"]["name"])),
                             lambda _o, n: seen.append(("update", n["metadata"]["name"])),
                             lambda o: seen.append(("delete", o["metadata"]["name"])))
            return inf

        inf = loop.call(make())
        fut = loop.spawn(inf.run())
        wait_for("synced", lambda: inf.synced)
        assert sorted(seen) == [("add", "one"), ("add", "two")]
        cp.req("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": "three"}})
        wait_for("watch event", lambda: ("add", "three") in seen)
        # stop; change things; let the server compact that history away; run again from the old version
        fut.cancel()
        time.sleep(0.2)
        seen.clear()
        cp.req("DELETE", f"/api/v1/namespaces/{ns}/configmaps/one")
        cp.req("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": "four"}})
        cp.req("PATCH", f"/api/v1/namespaces/{ns}/configmaps/two", json={"data": {"a": "b"}},
               headers={"Content-Type": "application/merge-patch+json"})
        for i in range(3):  # more writes so the compactor moves past our version
            cp.req("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": f"x{i}"}})
            time.sleep(0.4)
        loop.spawn(inf.run())
        wait_for("relisted", lambda: inf.relists >= 1 and "x2" in {k.split("/")[1] for k in inf.store})
        assert sorted(k.split("/")[1] for k in inf.store) == ["four", "three", "two", "x0", "x1", "x2"]
        assert ("delete", "one") in seen and ("add", "four") in seen and ("update", "two") in seen
    finally:
        loop.stop()
        cp.stop()


def test_informer_resumes_without_relist(cp: ControlPlane, loop: Loop) -> None:
    ns = cp.namespace(free_ns())
    c = loop.client(cp)

    async def make() -> Informer:
        return Informer(c, CONFIGMAPS, ns)

    inf = loop.call(make())
    fut = loop.spawn(inf.run())
    wait_for("synced", lambda: inf.synced)
    fut.cancel()
    time.sleep(0.1)
    cp.req("POST", f"/api/v1/namespaces/{ns}/configmaps", json={"metadata": {"name": "while-away"}})
    loop.spawn(inf.run())
    wait_for("caught up by watch", lambda: f"{ns}/while-away" in inf.store)
    assert inf.relists == 0
