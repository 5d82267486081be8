"""A bare API server with simulated nodes, for the scheduler, controllers and etcd suites (and benches).

* `ControlPlane` -- a `kubeletpy control-plane --no-controllers` subprocess (support.controlplane)
  with `api`, a requests session verifying the generated CA, and REST helpers that create
  simulated Nodes (+ their Leases) and pods as an agent and a user would.
* `Loop` -- an asyncio loop in a thread, so the synchronous tests can run the scheduler
  and the controllers (which are asyncio) next to them and stop them again.
* `wait_for`, `free_ns`; the fixtures `cp` (a fresh control plane per test: nodes are
  cluster-wide, so tests must not share one) and `loop`, imported by the suites' conftest.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import pytest
import requests

from kubeletpy.apiclient import Client, micro_time, rfc3339

from . import REPO
from .controlplane import CONTROL_PLANE, ControlPlaneProcess

__all__ = ["REPO", "ControlPlane", "Loop", "cp", "free_ns", "loop", "wait_for"]


class ControlPlane(ControlPlaneProcess):
    def __init__(self, root: Path, extra_args: Sequence[str] = (), command: Sequence[str] | None = None,
                 listen: str = "127.0.0.1:0") -> None:
        """A bare API server (`--no-controllers`): the tests run the scheduler/controllers themselves."""
        super().__init__(root, extra_args, command=command or [*CONTROL_PLANE, "--no-controllers"], listen=listen)
        self.api = requests.Session()

    def connect(self) -> Self:
        """Read the admin kubeconfig into `url` and the `api` session (also for an in-process server)."""
        super().connect()
        self.api = self.session()
        return self

    def client(self, **kw: Any) -> Client:
        return Client.from_kubeconfig(self.kubeconfig, **kw)

    # ------------------------------------------------------------------ REST helpers (sync)

    def req(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kw: Any) -> Any:
        r = self.api.request(method, self.url + path, timeout=30, **kw)
        if r.status_code not in ok:
            raise AssertionError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def namespace(self, name: str) -> str:
        self.req("POST", "/api/v1/namespaces", json={"metadata": {"name": name}}, ok=(201, 409))
        return name

    def node(self, name: str, *, cpu: str = "4", memory: str = "8Gi", pods: int = 110,
             labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
             ready: str | None = "True", unschedulable: bool = False, lease: bool = True,
             extra: dict[str, str] | None = None) -> dict[str, Any]:
        """A simulated Node with its status (as an agent would post it) and its Lease."""
        alloc = {"cpu": cpu, "memory": memory, "pods": str(pods), **(extra or {})}
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Node",
                                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                                      **(labels or {})}},
                                "spec": {"taints": taints or [], "unschedulable": unschedulable}}
        node = self.req("POST", "/api/v1/nodes", json=body)
        status: dict[str, Any] = {"capacity": alloc, "allocatable": alloc, "conditions": []}
        if ready is not None:
            now = rfc3339()
            status["conditions"] = [{"type": "Ready", "status": ready, "reason": "KubeletReady",
                                     "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                                     "lastTransitionTime": now}]
        node = self.req("PATCH", f"/api/v1/nodes/{name}/status", json={"status": status},
                        headers={"Content-Type": "application/merge-patch+json"})
        if lease:
            self.renew_lease(name)
        return node

    def set_ready(self, node: str, status: str, reason: str = "KubeletReady", message: str = "") -> None:
        """What an agent does when it posts its Ready condition (strategic merge: conditions by type)."""
        now = rfc3339()
        cond = {"type": "Ready", "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now,
                "lastTransitionTime": now}
        self.req("PATCH", f"/api/v1/nodes/{node}/status", json={"status": {"conditions": [cond]}},
                 headers={"Content-Type": "application/strategic-merge-patch+json"})

    def renew_lease(self, node: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
        r = self.api.get(self.url + path, timeout=30)
        if r.status_code == 404:
            self.req("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json={
                "metadata": {"name": node}, "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                                                     "renewTime": micro_time()}})
            return
        self.req("PATCH", path, json={"spec": {"renewTime": micro_time()}},
                 headers={"Content-Type": "application/merge-patch+json"})

    def pod(self, ns: str, name: str, *, cpu: str | None = None, memory: str | None = None,
            **spec: Any) -> dict[str, Any]:
        res: dict[str, Any] = {}
        if cpu or memory:
            res["requests"] = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "resources": res}], **spec}}
        return self.req("POST", f"/api/v1/namespaces/{ns}/pods", json=body)

    def get_pod(self, ns: str, name: str) -> dict[str, Any]:
        return self.req("GET", f"/api/v1/namespaces/{ns}/pods/{name}")

    def get_node(self, name: str) -> dict[str, Any]:
        return self.req("GET", f"/api/v1/nodes/{name}")

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        return self.req("GET", f"/api/v1/namespaces/{ns}/events",
                        params={"fieldSelector": f"involvedObject.name={name}"})["items"]


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Loop:
    """An asyncio event loop in a daemon thread; `spawn` runs a coroutine there, `stop` cancels everything."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._futs: list[concurrent.futures.Future] = []
        self.clients: list[Client] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        f = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._futs.append(f)
        return f

    def client(self, cp: ControlPlane, **kw: Any) -> Client:
        """A REST client created on (and closed with) this loop."""

        async def make() -> Client:
            return cp.client(**kw)

        c = self.call(make())
        self.clients.append(c)
        return c

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        for f in self._futs:
            f.cancel()

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in self.clients:
                await c.close()

        try:
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def free_ns(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid() % 10000}-{time.time_ns() % 10**9:x}"


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[ControlPlane]:
    c = ControlPlane(tmp_path).start()
    yield c
    c.stop()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.stop()
