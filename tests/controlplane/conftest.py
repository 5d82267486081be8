"""Fixtures: a real `kubeletpy control-plane` subprocess on 127.0.0.1 with a tmp data dir,
an HTTPS client that verifies the server against the generated CA, and a kubectl runner
that always passes --kubeconfig and a private --cache-dir.

The API server fixtures are parametrized over both datastores: `sqlite` (the default
`state.db` in the data dir) and `etcd` (`--datastore etcd://...` on a real 3-member etcd
cluster on 127.0.0.1, from tests/etcd/etcdcluster.py), so the same API tests run on both."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from etcd.etcdcluster import EtcdCluster
from support.controlplane import CONTROL_PLANE, ControlPlaneProcess

KUBECTL = "/usr/bin/kubectl"
VERSIONED = "/usr/lib/google-cloud-sdk/bin/kubectl.1.{}"
BACKENDS = ["sqlite", "etcd"]


@functools.cache
def _api_server_only() -> list[str]:
    """These tests exercise the API server alone: no scheduler or controllers changing the objects
    under test, when this `control-plane` runs them by default (`--no-controllers`)."""
    out = subprocess.run([*CONTROL_PLANE, "--help"], capture_output=True, text=True, timeout=60).stdout
    return ["--no-controllers"] if "--no-controllers" in out else []


class ControlPlane(ControlPlaneProcess):
    """One API server process (tests/support/controlplane.py); `restart()` keeps the data dir."""

    def __init__(self, root: Path, compaction: float = 300.0, datastore: str = "") -> None:
        """`datastore` empty: the default SQLite file in the data dir; else a `--datastore` URL."""
        super().__init__(root, ["--compaction-interval", str(compaction), *_api_server_only(),
                                *(["--datastore", datastore] if datastore else [])], cwd=root)
        self.datastore = datastore
        self.backend = datastore.split(":", 1)[0] if datastore else "sqlite"
        self.compaction = compaction

    def kubectl(self, *args: str, version: int | None = None, input: str | None = None,
                timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        exe = VERSIONED.format(version) if version else KUBECTL
        cache = self.root / f"kcache-{version or 'd'}"
        r = subprocess.run([exe, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(cache), *args],
                           capture_output=True, text=True, input=input, timeout=timeout, cwd=str(self.root))
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r


def start_etcd(tmp_path_factory: pytest.TempPathFactory, name: str) -> EtcdCluster:
    return EtcdCluster(tmp_path_factory.mktemp(name)).start()


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real 3-member etcd for the session's etcd-backed API server (started only when needed)."""
    c = start_etcd(tmp_path_factory, "etcd")
    yield c
    c.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def datastore_for(backend: str, request: pytest.FixtureRequest) -> str:
    """The `--datastore` URL of a session-shared API server on `backend` ("" = the default SQLite file)."""
    if backend == "sqlite":
        return ""
    return request.getfixturevalue("etcd_cluster").url


@pytest.fixture(scope="session")
def cp(backend: str, request: pytest.FixtureRequest,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    c = ControlPlane(tmp_path_factory.mktemp(f"cp-{backend}"), datastore=datastore_for(backend, request))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def api(cp: ControlPlane) -> requests.Session:
    return cp.session()


@pytest.fixture
def ns(api: requests.Session, cp: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, so tests do not see each other's objects."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + f"-{os.getpid() % 1000}"
    r = api.post(f"{cp.url}/api/v1/namespaces", json={"metadata": {"name": name}})
    assert r.status_code == 201, r.text
    yield name
    api.delete(f"{cp.url}/api/v1/namespaces/{name}")
    settle_namespace_deletion(api, cp, name)


def settle_namespace_deletion(api: requests.Session, cp: ControlPlane, name: str, timeout: float = 10.0) -> None:
    """Let the namespace controller finish (namespace gone, or nothing more written: pods bound to a
    node stay Terminating), so its writes do not land in the next test's resourceVersion checks."""
    last, since = "", time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        if api.get(f"{cp.url}/api/v1/namespaces/{name}").status_code == 404:
            return
        rv = api.get(f"{cp.url}/api/v1/namespaces", params={"limit": "1"}).json()["metadata"]["resourceVersion"]
        if rv != last:
            last, since = rv, time.monotonic()
        elif time.monotonic() - since >= 0.25:
            return
        time.sleep(0.03)


def pod(name: str, image: str = "busybox:1.36", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": name, "labels": {"app": name}},
                            "spec": {"containers": [{"name": "main", "image": image}]}}
    body["spec"].update(extra)
    return body
