"""API server on etcd: create 5,000 pods with 8 concurrent clients on a 3-member etcd cluster.

Starts a real 3-member etcd cluster (Debian's /usr/bin/etcd, 127.0.0.1, tmp data dirs,
fsync on) and `kubeletpy control-plane --datastore etcd://m1,m2,m3`,
then creates N pods (default 5,000) from C keep-alive HTTPS clients (default 8) and
reports creates/s and p50/p99 latency; then a list of all of them; then kills one etcd
member and creates N/10 more to show the cost of failover.

Run: `.venv/bin/python bench/bench_etcd.py` (as in `make bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from etcd.etcdcluster import EtcdCluster  # noqa: E402
from support.controlplane import ControlPlaneProcess  # noqa: E402

from kubeletpy.apiclient import NAMESPACES, PODS, Client  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def creates(clients: list[Client], ns: str, prefix: str, n: int) -> tuple[float, list[float]]:
    q: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        q.put_nowait(i)
    lat: list[float] = []

    async def worker(c: Client) -> None:
        while not q.empty():
            i = q.get_nowait()
            body = {"metadata": {"name": f"{prefix}-{i:05d}", "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                             "resources": {"requests": {"cpu": "10m"}}}]}}
            t = time.perf_counter()
            await c.create(PODS, body, ns)
            lat.append((time.perf_counter() - t) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    return time.perf_counter() - t0, lat


async def run(args: argparse.Namespace, kubeconfig: Path, etcd: EtcdCluster) -> None:
    clients = [Client.from_kubeconfig(kubeconfig, user_agent="bench", max_connections=1)
               for _ in range(args.clients)]
    await clients[0].create(NAMESPACES, {"metadata": {"name": "bench"}})
    await creates(clients, "bench", "warm", 50)
    dur, lat = await creates(clients, "bench", "p", args.pods)
    print(f"create: {args.pods} pods, {args.clients} clients: {args.pods / dur:.0f} creates/s, "
          f"p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms")
    t = time.perf_counter()
    lst = await clients[0].list(PODS, "bench")
    print(f"list:   {len(lst['items'])} pods in {(time.perf_counter() - t) * 1000:.0f} ms (pages of 500)")
    victim = etcd.leader()
    etcd.kill(victim if victim is not None else 0)
    n = max(args.pods // 10, 10)
    dur, lat = await creates(clients, "bench", "after-kill", n)
    print(f"after killing etcd member {victim} (the leader): {n} pods: {n / dur:.0f} creates/s, "
          f"p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.0f} ms")
    for c in clients:
        await c.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-etcd-"))
    etcd = EtcdCluster(root).start()
    cp = ControlPlaneProcess(root, ["--no-controllers", "--datastore", etcd.url])
    try:
        asyncio.run(run(args, cp.start().kubeconfig, etcd))
    finally:
        cp.stop()
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
