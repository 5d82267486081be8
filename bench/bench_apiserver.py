"""API server benchmark: create throughput/latency, watch fan-out latency, idle RSS.

Starts `kubeletpy control-plane` on 127.0.0.1 (free port, tmp data dir, SQLite datastore),
then, from one asyncio client process:

1. creates N pods (default 5,000) with C concurrent clients (default 8), each on its own
   keep-alive HTTPS connection, and reports creates/s and p50/p99 latency;
2. lists them (plain JSON and as a Table, as `kubectl get pods` asks);
3. opens W watchers (default 100) on one namespace, creates pods one at a time, and reports
   the delivery latency (request sent -> event read by a watcher) over all watcher events;
4. reports the server's RSS idle (before any load) and after the run.

Targets from the issue: >= 500 creates/s, p99 <= 50 ms, watch delivery p99 <= 50 ms,
idle RSS <= 80 MiB. Run: `.venv/bin/python bench/bench_apiserver.py` (as in `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from support.controlplane import ControlPlaneProcess  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def pod_body(name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "labels": {"app": "bench"}},
                       "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
                                                "command": ["sleep", "3600"],
                                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
                       }).encode()


async def bench_creates(url: str, headers: dict[str, str], tls: ssl.SSLContext, n: int, clients: int) -> dict:
    latencies: list[float] = []
    counter = iter(range(n))
    errors = 0

    async def worker(w: int) -> None:
        nonlocal errors
        conn = aiohttp.TCPConnector(ssl=tls, limit=1)
        async with aiohttp.ClientSession(connector=conn, headers=headers) as s:
            for i in counter:
                body = pod_body(f"pod-{i}")
                t0 = time.perf_counter()
                async with s.post(f"{url}/api/v1/namespaces/default/pods", data=body) as r:
                    await r.read()
                    if r.status != 201:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - t0
    return {"n": n, "clients": clients, "seconds": elapsed, "rate": n / elapsed, "errors": errors,
            "p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000,
            "mean_ms": statistics.mean(latencies) * 1000}


async def bench_list(url: str, headers: dict[str, str], tls: ssl.SSLContext) -> dict:
    out = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls), headers=headers) as s:
        for label, accept in (("json", "application/json"),
                              ("table", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                async with s.get(f"{url}/api/v1/namespaces/default/pods", headers={"Accept": accept}) as r:
                    body = await r.read()
                times.append(time.perf_counter() - t0)
            out[label] = (min(times) * 1000, len(body) / 2**20)
    return out


async def bench_watch(url: str, headers: dict[str, str], tls: ssl.SSLContext, watchers: int, events: int) -> dict:
    conn = aiohttp.TCPConnector(ssl=tls, limit=0)
    sent: dict[str, float] = {}
    delays: list[float] = []
    async with aiohttp.ClientSession(connector=conn, headers=headers) as s:
        r = await s.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": "watchbench"}})
        assert r.status == 201, await r.text()
        async with s.get(f"{url}/api/v1/namespaces/watchbench/pods") as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        ready = asyncio.Event()
        opened = 0
        done = asyncio.Event()
        received = 0

        async def watcher() -> None:
            nonlocal opened, received
            async with s.get(f"{url}/api/v1/namespaces/watchbench/pods?watch=true&resourceVersion={rv}"
                             f"&timeoutSeconds=120") as resp:
                opened += 1
                if opened == watchers:
                    ready.set()
                async for line in resp.content:
                    now = time.perf_counter()
                    ev = json.loads(line)
                    name = ev["object"]["metadata"]["name"]
                    delays.append(now - sent[name])
                    received += 1
                    if received == watchers * events:
                        done.set()
                    if name == f"w-{events - 1}":
                        return

        tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(0.5)
        pace = 0.02  # 50 creates/s -> 5,000 watch events/s delivered
        for i in range(events):
            name = f"w-{i}"
            sent[name] = time.perf_counter()
            async with s.post(f"{url}/api/v1/namespaces/watchbench/pods", data=pod_body(name)) as r:
                await r.read()
            await asyncio.sleep(pace)
        await asyncio.wait_for(done.wait(), 60)
        for t in tasks:
            t.cancel()
    return {"watchers": watchers, "events": events, "delivered": len(delays),
            "p50_ms": pct(delays, 50) * 1000, "p99_ms": pct(delays, 99) * 1000, "max_ms": max(delays) * 1000}


async def main_async(args: argparse.Namespace, url: str, token: str, ca: Path, pid: int) -> None:
    tls = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "User-Agent": "bench_apiserver"}
    c = await bench_creates(url, headers, tls, args.pods, args.clients)
    print(f"create: {c['n']} pods, {c['clients']} clients: {c['rate']:.0f} creates/s "
          f"({c['seconds']:.1f}s), latency p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, "
          f"mean {c['mean_ms']:.1f} ms, errors {c['errors']}")
    print(f"rss after creates: {rss_mib(pid):.1f} MiB")
    lst = await bench_list(url, headers, tls)
    print(f"list of all {args.pods} pods: " + ", ".join(
        f"{k} {ms:.0f} ms ({mib:.1f} MiB)" for k, (ms, mib) in lst.items()))
    w = await bench_watch(url, headers, tls, args.watchers, args.events)
    print(f"watch fan-out: {w['watchers']} watchers x {w['events']} events = {w['delivered']} deliveries, "
          f"latency p50 {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms, max {w['max_ms']:.1f} ms")
    print(f"rss after watch: {rss_mib(pid):.1f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--sync", choices=("normal", "full"), default="full",
                    help="SQLite durability: full (fsync per group commit; the server default) or normal (no fsync)")
    ap.add_argument("--keep", action="store_true", help="keep the tmp data dir")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-apiserver-"))
    # --no-controllers: the API server alone; the in-process scheduler would otherwise try to place
    # the thousands of node-less pods this bench creates and skew both throughput and RSS.
    cp = ControlPlaneProcess(root, ["--no-controllers",
                                    "--datastore", f"sqlite://{root / 'data' / 'state.db'}?sync={args.sync}"]).start()
    assert cp.proc is not None
    pid = cp.proc.pid
    try:
        time.sleep(1.0)
        print(f"server {cp.url} (SQLite sync={args.sync} in {root / 'data'}), idle rss: {rss_mib(pid):.1f} MiB")
        asyncio.run(main_async(args, cp.url, cp.token, cp.ca, pid))
    finally:
        cp.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
