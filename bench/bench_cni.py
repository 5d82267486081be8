"""CNI benchmark: per-pod network setup, ours in-process vs the reference plugins exec'ed.

Both sides run the same chain through the same :class:`cni.invoker.Invoker`:
``bridge`` (isGateway, ipMasq) + ``host-local`` — i.e. veth + address + routes +
masquerade per pod. "ours" runs our plugins in-process; "reference" execs
``/usr/lib/cni/bridge`` (which execs ``host-local``), as containerd would.
Then 250 pods on one bridge: ADD all, DEL all, and proof that nothing is left.

Run as root:  .venv/bin/python bench/bench_cni.py [--pods 250] [--samples 30]
Everything it creates is uniquely named (kpb*/kpbench-*) and removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cni.invoker import Invoker, parse_network_config  # noqa: E402

REF_DIR = "/usr/lib/cni"


def sh(cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True).stdout


def pick_subnet(prefix: int) -> str:
    routes = sh("ip -4 route show table all")
    while True:
        net = ipaddress.ip_network(f"10.{random.randint(250, 254)}.{random.randrange(0, 256, 2)}.0/{prefix}")
        if str(net.network_address).rsplit(".", 1)[0] + "." not in routes:
            return str(net)


class Scenario:
    """A private network (bridge, subnet, state dirs) plus its netns; cleans up after itself."""

    def __init__(self, label: str, tmp: Path, prefix: int = 24) -> None:
        tag = secrets.token_hex(2)
        self.name = f"kpbench-{label}-{tag}"
        self.bridge = f"kpb{tag}"
        self.subnet = pick_subnet(prefix)
        self.data_dir = tmp / self.name / "networks"
        self.cache_dir = tmp / self.name / "results"
        self.netns: list[str] = []
        self.conflist = {"cniVersion": "1.0.0", "name": self.name, "plugins": [{
            "type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "subnet": self.subnet, "dataDir": str(self.data_dir),
                     "routes": [{"dst": "0.0.0.0/0"}]}}]}

    def make_netns(self, n: int) -> list[str]:
        names = [f"kpbench-{secrets.token_hex(4)}" for _ in range(n)]
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {x}\n" for x in names), text=True, check=True)
        self.netns += names
        return [f"/run/netns/{x}" for x in names]

    def leftovers(self) -> dict[str, object]:
        # the /24 prefixes of this subnet, e.g. "10.252.14." — exact, so other users' rules never count
        prefixes = {str(n.network_address).rsplit(".", 1)[0] + "." for n in ipaddress.ip_network(self.subnet).subnets(new_prefix=24)}

        def count(text: str) -> int:
            return sum(1 for x in text.splitlines() if any(p in x for p in prefixes))

        lease_dir = self.data_dir / self.name
        return {
            "veths on bridge": sh(f"ip -o link show master {self.bridge}", check=False).count("\n"),
            "leases": len([p for p in lease_dir.iterdir() if p.name[0].isdigit()]) if lease_dir.exists() else 0,
            "nft rules": count(sh("nft list ruleset")),
            "iptables rules": count(sh("iptables-save -t nat")),
            "cached results": len(list(self.cache_dir.iterdir())) if self.cache_dir.exists() else 0,
        }

    def cleanup(self) -> None:
        """Remove everything even after a failed run: rules (by network name), netns, bridge."""
        from cni import firewall

        with contextlib.suppress(Exception):
            firewall.get_backend().gc("masq", self.name, set())
        if self.netns:
            subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del {x}\n" for x in self.netns),
                           text=True, capture_output=True)
        sh(f"ip link del {self.bridge}", check=False)


def measure(runs: dict[str, tuple[Invoker, Scenario]], samples: int) -> dict[str, tuple[list[float], list[float]]]:
    """ADD then DEL ``samples`` pods per scenario, interleaved pod by pod so that
    background load on the host hits every contender alike. Two warm-up pods each
    (bridge creation, first imports) are not counted."""
    nets = {k: parse_network_config(sc.conflist) for k, (_, sc) in runs.items()}
    nss = {k: sc.make_netns(samples + 2) for k, (_, sc) in runs.items()}
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in runs}
    for phase in (0, 1):
        for i in range(samples + 2):
            for k, (inv, _) in runs.items():
                t0 = time.perf_counter()
                if phase == 0:
                    inv.add(nets[k], f"c{i}", nss[k][i], "eth0")
                else:
                    inv.delete(nets[k], f"c{i}", nss[k][i], "eth0")
                if i >= 2:
                    out[k][phase].append(time.perf_counter() - t0)
    return out


def ms(x: float) -> str:
    return f"{x * 1000:7.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=250)
    ap.add_argument("--samples", type=int, default=30)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_cni: needs root (creates netns, bridges, NAT rules)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="kpbench-cni-"))
    scenarios: list[Scenario] = []
    try:
        print(f"== per-pod ADD/DEL (bridge isGateway+ipMasq, host-local), {a.samples} pods each, medians")
        bindir = tmp / "bin"
        from cni.install import install_plugins
        install_plugins(bindir, names="plain")
        runs: dict[str, tuple[Invoker, Scenario]] = {}
        for label, key, mk in (
            ("ours, in-process", "ours", lambda sc: Invoker(cache_dir=sc.cache_dir)),
            ("ours, exec'ed", "oursx", lambda sc: Invoker(bin_dirs=[str(bindir)], cache_dir=sc.cache_dir, in_process=False)),
            ("reference, exec'ed", "ref", lambda sc: Invoker(bin_dirs=[REF_DIR], cache_dir=sc.cache_dir, in_process=False)),
        ):
            if key == "ref" and not os.path.exists(f"{REF_DIR}/bridge"):
                continue
            sc = Scenario(key, tmp)
            scenarios.append(sc)
            runs[label] = (mk(sc), sc)
        rows = measure(runs, a.samples)
        for label, (adds, dels) in rows.items():
            print(f"  {label:20s} ADD {ms(statistics.median(adds))}   DEL {ms(statistics.median(dels))}"
                  f"   (ADD p90 {ms(statistics.quantiles(adds, n=10)[-1])})")
        if "reference, exec'ed" in rows:
            r_add = statistics.median(rows["ours, in-process"][0]) / statistics.median(rows["reference, exec'ed"][0])
            r_del = statistics.median(rows["ours, in-process"][1]) / statistics.median(rows["reference, exec'ed"][1])
            print(f"  ratio ours/reference: ADD {r_add:.2f}x   DEL {r_del:.2f}x   (target ADD <= 0.5x)")
        for sc in scenarios:
            left = sc.leftovers()
            assert not any(left.values()), f"{sc.name} left {left}"

        print(f"== {a.pods} pods on one bridge, ours in-process")
        big = Scenario("big", tmp, prefix=23)
        scenarios.append(big)
        net = parse_network_config(big.conflist)
        inv = Invoker(cache_dir=big.cache_dir)
        t0 = time.perf_counter()
        nss = big.make_netns(a.pods)
        t_ns = time.perf_counter() - t0
        t0 = time.perf_counter()
        ips = set()
        for i, ns in enumerate(nss):
            ips.add(inv.add(net, f"p{i}", ns, "eth0")["ips"][0]["address"])
        t_add = time.perf_counter() - t0
        on_bridge = sh(f"ip -o link show master {big.bridge}").count("\n")
        t0 = time.perf_counter()
        for i, ns in enumerate(nss):
            inv.delete(net, f"p{i}", ns, "eth0")
        t_del = time.perf_counter() - t0
        print(f"  (netns creation, not counted: {t_ns:.2f}s)")
        print(f"  ADD {a.pods}: {t_add:6.2f}s total, {ms(t_add / a.pods)}/pod; {len(ips)} distinct IPs, {on_bridge} veths on the bridge")
        print(f"  DEL {a.pods}: {t_del:6.2f}s total, {ms(t_del / a.pods)}/pod")
        left = big.leftovers()
        print("  left after DEL: " + ", ".join(f"{k}={v}" for k, v in left.items()))
        assert len(ips) == a.pods and on_bridge == a.pods and not any(left.values()), left
        print("  nothing left: OK")
        return 0
    finally:
        for sc in scenarios:
            sc.cleanup()
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    sys.exit(main())
