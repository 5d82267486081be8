"""Scheduler benchmark: 1,000 pending pods on 50 simulated nodes.

Starts `kubeletpy control-plane` on 127.0.0.1 (free port, tmp data dir), creates 50 Nodes
(Ready, 32 cpu / 64Gi / 110 pods each) and their Leases, then runs the scheduler in this
process -- a separate process from the API server, talking to it only over HTTPS, as
kube-scheduler does -- in two phases:

1. **backlog**: N pods (default 1,000; 100m cpu / 128Mi each) are created first, then
   the scheduler starts; reported: binds/s from its first to its last bind, and the time
   from scheduler start to each pod being bound (p50/p99) as seen by a watch;
2. **streaming**: the scheduler is running; N more pods are created by 8 concurrent
   clients; reported: binds/s and the time from the create call returning to the bind
   being visible on a watch (p50/p99) -- the "time to bind" a user sees.

The scheduler also writes a "Scheduled" event per pod, as the real one does.
`--in-process` runs the API server in this process too, on the same event loop as the
scheduler -- how `kubeletpy control-plane` runs them once `run_all` is wired in.
Target from the issue: >= 200 binds/s. Run: `.venv/bin/python bench/bench_scheduler.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from support.controlplane import ControlPlaneProcess  # noqa: E402

from kubeletpy.apiclient import LEASES, NAMESPACES, NODES, PODS, Client, micro_time, rfc3339  # noqa: E402
from kubeletpy.scheduler import Scheduler  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def make_nodes(c: Client, n: int) -> None:
    alloc = {"cpu": "32", "memory": "64Gi", "pods": "110"}

    async def one(i: int) -> None:
        name = f"node-{i:03d}"
        await c.create(NODES, {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
        now = rfc3339()
        await c.patch(NODES, name, {"status": {"capacity": alloc, "allocatable": alloc, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now,
             "lastTransitionTime": now}]}}, subresource="status")
        await c.create(LEASES, {"metadata": {"name": name, "namespace": "kube-node-lease"},
                                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                                         "renewTime": micro_time()}})

    await asyncio.gather(*(one(i) for i in range(n)))


def pod_body(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"containers": [{
        "name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}


async def create_pods(c: Client, ns: str, prefix: str, n: int, concurrency: int,
                      created: dict[str, float] | None = None) -> None:
    q: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        q.put_nowait(i)

    async def worker() -> None:
        while not q.empty():
            i = q.get_nowait()
            name = f"{prefix}-{i:05d}"
            await c.create(PODS, pod_body(name), ns)
            if created is not None:
                created[name] = time.perf_counter()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def watch_bound(c: Client, ns: str, n: int, bound: dict[str, float], rv: str) -> None:
    while len(bound) < n:
        async for ev in c.watch(PODS, ns, resource_version=rv, timeout_seconds=120):
            meta = ev.object.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            if (ev.object.get("spec") or {}).get("nodeName") and meta.get("name") not in bound:
                bound[meta["name"]] = time.perf_counter()
                if len(bound) >= n:
                    return


async def run(args: argparse.Namespace, kubeconfig: Path) -> None:
    c = Client.from_kubeconfig(kubeconfig, user_agent="bench", max_connections=64)
    await make_nodes(c, args.nodes)
    print(f"{args.nodes} nodes with leases created")

    # ---- phase 1: backlog
    await c.create(NAMESPACES, {"metadata": {"name": "backlog"}})
    t0 = time.perf_counter()
    await create_pods(c, "backlog", "p", args.pods, 16)
    print(f"created {args.pods} pending pods in {time.perf_counter() - t0:.1f}s")
    rv = (await c.list(PODS, "backlog"))["metadata"]["resourceVersion"]
    bound: dict[str, float] = {}
    watcher = asyncio.create_task(watch_bound(c, "backlog", args.pods, bound, rv))
    sc = Client.from_kubeconfig(kubeconfig, user_agent="kube-scheduler", max_connections=64)
    sched = Scheduler(sc, bind_concurrency=args.bind_concurrency)
    start = time.perf_counter()
    stask = asyncio.create_task(sched.run())
    await asyncio.wait_for(watcher, 300)
    times = sorted(bound.values())
    dur = times[-1] - times[0]
    lat = [t - start for t in times]
    print(f"backlog:   {args.pods} binds in {times[-1] - start:.2f}s after scheduler start "
          f"(first bind after {times[0] - start:.2f}s: informer sync); {args.pods / dur:.0f} binds/s; "
          f"start->bound p50 {statistics.median(lat):.2f}s p99 {pct(lat, 99):.2f}s")
    backlog_rate = args.pods / dur

    # ---- phase 2: streaming
    await c.create(NAMESPACES, {"metadata": {"name": "stream"}})
    rv = (await c.list(PODS, "stream"))["metadata"]["resourceVersion"]
    bound2: dict[str, float] = {}
    created: dict[str, float] = {}
    watcher = asyncio.create_task(watch_bound(c, "stream", args.pods, bound2, rv))
    t0 = time.perf_counter()
    await create_pods(c, "stream", "s", args.pods, 8, created)
    t_created = time.perf_counter()
    await asyncio.wait_for(watcher, 300)
    lat2 = [(bound2[n] - created[n]) * 1000 for n in created if n in bound2]
    t_last = max(bound2.values())
    print(f"streaming: {args.pods} pods created in {t_created - t0:.2f}s by 8 clients, all bound after "
          f"{t_last - t0:.2f}s: {args.pods / (t_last - t0):.0f} binds/s; create->bound "
          f"p50 {statistics.median(lat2):.0f} ms p99 {pct(lat2, 99):.0f} ms")
    print(f"scheduler: bound {sched.bound}, bind errors {sched.bind_errors}, "
          f"unschedulable attempts {sched.unschedulable_attempts}")
    target = 200
    print(f"target >= {target} binds/s: backlog {'OK' if backlog_rate >= target else 'MISSED'}")
    stask.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stask
    await sc.close()
    await c.close()


async def run_in_process(args: argparse.Namespace, root: Path) -> None:
    from kubeletpy.controlplane.app import Config, ControlPlane

    cp = ControlPlane(Config(listen="127.0.0.1:0", data_dir=root / "data", kubeconfig=root / "admin.kubeconfig"))
    await cp.start()
    try:
        await run(args, root / "admin.kubeconfig")
    finally:
        await cp.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--bind-concurrency", type=int, default=32)
    ap.add_argument("--in-process", action="store_true", help="API server and scheduler on one event loop")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sched-"))
    try:
        if args.in_process:
            asyncio.run(run_in_process(args, root))
            return 0
        # --no-controllers: the control plane's own scheduler would bind the backlog before ours starts
        cp = ControlPlaneProcess(root, ["--no-controllers"]).start()
        try:
            asyncio.run(run(args, cp.kubeconfig))
        finally:
            cp.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
