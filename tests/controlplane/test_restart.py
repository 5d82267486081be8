"""Persistence across restarts, watch resume from a resourceVersion, and 410 after compaction,
on both datastores (etcd: a fresh cluster for this module, since its 1 s compaction would cut
the history of the session's shared etcd)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import ControlPlane, pod, start_etcd


@pytest.fixture(scope="module")
def rcp(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    etcd = start_etcd(tmp_path_factory, "etcd-restart") if backend == "etcd" else None
    c = ControlPlane(tmp_path_factory.mktemp(f"restart-{backend}"), compaction=1.0,
                     datastore=etcd.url if etcd else "")
    try:
        c.start()
        yield c
    finally:
        c.stop()
        if etcd:
            etcd.stop()


def events(s: requests.Session, u: str) -> list[dict]:
    r = s.get(u, stream=True, timeout=15)
    assert r.status_code == 200
    return [json.loads(ln) for ln in r.iter_lines() if ln]


def test_restart_persists_objects_tokens_and_revisions(rcp: ControlPlane) -> None:
    s = rcp.session()
    base = rcp.url
    s.post(base + "/api/v1/namespaces", json={"metadata": {"name": "keep"}})
    created = s.post(base + "/api/v1/namespaces/keep/pods", json=pod("p1")).json()
    s.post(base + "/api/v1/namespaces/keep/configmaps", json={"metadata": {"name": "c"}, "data": {"a": "1"}})
    rv_before = int(s.get(base + "/api/v1/namespaces/keep/pods").json()["metadata"]["resourceVersion"])
    token, ca = rcp.token, rcp.ca.read_bytes()
    agent_client = (rcp.data / "pki" / "apiserver-kubelet-client.crt").read_bytes()
    rcp.restart()
    assert rcp.token == token and rcp.ca.read_bytes() == ca  # same admin credentials, same CA
    assert (rcp.data / "pki" / "apiserver-kubelet-client.crt").read_bytes() == agent_client
    s = rcp.session()
    got = s.get(rcp.url + "/api/v1/namespaces/keep/pods/p1").json()
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert s.get(rcp.url + "/api/v1/namespaces/keep/configmaps/c").json()["data"] == {"a": "1"}
    r = s.post(rcp.url + "/api/v1/namespaces/keep/pods", json=pod("p2")).json()
    assert int(r["metadata"]["resourceVersion"]) > rv_before  # monotonic across restarts
    r = rcp.kubectl("get", "pods", "-n", "keep", check=True)
    assert "p1" in r.stdout and "p2" in r.stdout


def test_watch_resumes_across_restart_then_expires(rcp: ControlPlane) -> None:
    s = rcp.session()
    s.post(rcp.url + "/api/v1/namespaces", json={"metadata": {"name": "wr"}})
    rv = s.get(rcp.url + "/api/v1/namespaces/wr/pods").json()["metadata"]["resourceVersion"]
    s.post(rcp.url + "/api/v1/namespaces/wr/pods", json=pod("a"))
    s.delete(rcp.url + "/api/v1/namespaces/wr/pods/a")
    rcp.restart()
    s = rcp.session()
    evs = events(s, rcp.url + f"/api/v1/namespaces/wr/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [("ADDED", "a"), ("DELETED", "a")]
    # after two compaction intervals with writes in between, that revision is gone: 410 Expired
    for i in range(3):
        s.post(rcp.url + "/api/v1/namespaces/wr/configmaps", json={"metadata": {"name": f"c{i}"}})
        time.sleep(1.1)
    evs = events(s, rcp.url + f"/api/v1/namespaces/wr/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    assert len(evs) == 1 and evs[0]["type"] == "ERROR"
    assert evs[0]["object"]["code"] == 410 and evs[0]["object"]["reason"] == "Expired"
    # a fresh list + watch from its revision works
    rv2 = s.get(rcp.url + "/api/v1/namespaces/wr/pods").json()["metadata"]["resourceVersion"]
    assert events(s, rcp.url + f"/api/v1/namespaces/wr/pods?watch=true&resourceVersion={rv2}&timeoutSeconds=1") == []


def test_two_instances_side_by_side(tmp_path: Path, rcp: ControlPlane,
                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    # another data dir and another datastore (on etcd: another cluster; one etcd is *shared* state)
    etcd = start_etcd(tmp_path_factory, "etcd-other") if rcp.backend == "etcd" else None
    other = ControlPlane(tmp_path, datastore=etcd.url if etcd else "")
    try:
        other.start()
        assert other.url != rcp.url
        s = other.session()
        s.post(other.url + "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "only-here"}})
        assert rcp.session().get(rcp.url + "/api/v1/namespaces/default/configmaps/only-here").status_code == 404
        assert rcp.session(token=other.token).get(rcp.url + "/api/v1/pods").status_code == 401
    finally:
        other.stop()
        if etcd:
            etcd.stop()


def test_cli_rejects_bad_flags(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "kubeletpy", "control-plane", "--listen", "nope",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--listen must be HOST:PORT" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kubeletpy", "control-plane", "--datastore", "mysql://x",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--datastore: unsupported datastore URL 'mysql://x'" in r.stderr
