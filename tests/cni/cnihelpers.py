"""Helpers for the CNI tests: unique names, private subnets, sockets inside netns, leak snapshots.

Other suites run on this host at the same time, so everything here is named
``kpt<random>`` / ``kptcni-<random>``, subnets are drawn from 10.250-254.x, state
goes to tmp dirs, and every fixture removes what it made even when a test fails.
Leak checks look only at objects carrying this test's identifiers.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shlex
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.netns import run_in_netns

_used_subnets: set[str] = set()
_lock = threading.Lock()


def sh(cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True).stdout


def random_subnet(prefix: int = 24) -> str:
    """A /24 (or smaller) in 10.250.0.0-10.254.255.0 not used by this session, not routed on the
    host and not named by any NAT rule (another network's leftovers would look like this test's leak)."""
    taken = sh("ip -4 route show table all") + sh("iptables-save -t nat", check=False) + \
        sh("nft list ruleset", check=False)
    with _lock:
        while True:
            net = f"10.{random.randint(250, 254)}.{random.randint(0, 255)}.0/{prefix}"
            if net not in _used_subnets and net.rsplit(".", 1)[0] + "." not in taken:
                _used_subnets.add(net)
                return net


@dataclass
class PodNet:
    """One private test network: names, subnet, state dirs, and helpers to build configs."""

    name: str
    bridge: str
    subnet: str
    data_dir: Path
    cache_dir: Path
    netns: list[str] = field(default_factory=list)

    def ipam(self, **kw: Any) -> dict[str, Any]:
        return {"type": "host-local", "subnet": self.subnet, "dataDir": str(self.data_dir), **kw}

    def bridge_conf(self, version: str = "1.0.0", **kw: Any) -> dict[str, Any]:
        conf = {"cniVersion": version, "name": self.name, "type": "bridge", "bridge": self.bridge,
                "isGateway": True, "ipMasq": True, "hairpinMode": True, "ipam": self.ipam()}
        conf.update(kw)
        return conf

    def conflist(self, version: str = "1.0.0", portmap: bool = True, bridge_type: str = "bridge",
                 ipam_type: str = "host-local", **kw: Any) -> dict[str, Any]:
        br = {k: v for k, v in self.bridge_conf(version, **kw).items() if k not in ("cniVersion", "name")}
        br["type"] = bridge_type
        br["ipam"]["type"] = ipam_type
        plugins = [br]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
        return {"cniVersion": version, "name": self.name, "plugins": plugins}

    @property
    def lease_dir(self) -> Path:
        return self.data_dir / self.name

    def leases(self) -> dict[str, str]:
        if not self.lease_dir.exists():
            return {}
        return {p.name: p.read_text() for p in self.lease_dir.iterdir() if p.name[0].isdigit() or ":" in p.name}

    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 1)


def _cleanup_iptables(net: PodNet) -> None:
    """Remove nat rules mentioning this test's subnet or network name, and the chains they
    jump to (ours ``KP-*`` or the reference plugins' ``CNI-*``): only after a failed test."""
    prefix = net.subnet.rsplit(".", 1)[0] + "."
    for _ in range(3):  # rules inside per-attachment chains, then the jumps to them
        lines = sh("iptables-save -t nat").splitlines()
        mine = [x for x in lines if x.startswith("-A ") and (prefix in x or f'"{net.name}"' in x or net.name in x)]
        if not mine:
            return
        chains = {x.split(" -j ")[1].split()[0] for x in mine if " -j " in x and x.split(" -j ")[1].startswith(("CNI-", "KP-"))}
        for x in mine:
            argv = shlex.split(x)
            argv[0] = "-D"
            subprocess.run(["iptables", "-w", "-t", "nat", *argv], capture_output=True)
        for c in chains - {"CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-DNAT"}:  # shared ones stay
            sh(f"iptables -w -t nat -F {c}; iptables -w -t nat -X {c}", check=False)


def snapshot(net: PodNet) -> dict[str, Any]:
    """Everything observable that this test's network could have left behind."""
    prefix = net.subnet.rsplit(".", 1)[0] + "."
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in sh("ip -o link").splitlines())
    return {
        # this test's bridge and whatever is plugged into it (other suites make kpv* veths too)
        "links": [x for x in links if x == net.bridge] + pod_links(net),
        "netns": sorted(x.split()[0] for x in sh("ip netns list").splitlines() if x.startswith("kptcni-")),
        "nft": sorted(line.strip() for line in sh("nft list ruleset").splitlines() if prefix in line),
        "iptables": sorted(line for line in sh("iptables-save -t nat").splitlines() if prefix in line),
        "leases": net.leases(),
    }


def pod_links(net: PodNet) -> list[str]:
    """Host veths currently attached to this test's bridge."""
    out = sh(f"ip -o link show master {net.bridge}", check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def _sock_in(netns: str | None, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    if netns is None:
        return socket.socket(family, kind)
    fd = os.open(netns, os.O_RDONLY)
    try:
        return run_in_netns(fd, lambda: socket.socket(family, kind))
    finally:
        os.close(fd)


class Server:
    """A TCP (or UDP) echo server listening inside a netns, on a thread of this process."""

    def __init__(self, netns: str | None, port: int = 8080, family: int = socket.AF_INET, udp: bool = False,
                 bind: str | None = None) -> None:
        self.sock = _sock_in(netns, family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        self.udp = udp
        if not udp:
            self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                if self.udp:
                    data, addr = self.sock.recvfrom(100)
                    if addr is None:  # socket shut down
                        return
                    self.sock.sendto(b"pong:" + data, addr)
                    continue
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(100)
                conn.sendall(b"pong:" + data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def tcp_ping(netns: str | None, addr: str, port: int = 8080, timeout: float = 3.0) -> bool:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = _sock_in(netns, family)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        s.sendall(b"hi")
        return s.recv(100) == b"pong:hi"
    except OSError:
        return False
    finally:
        s.close()


def udp_ping(netns: str | None, addr: str, port: int, timeout: float = 2.0) -> bool:
    s = _sock_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(b"hi", (addr, port))
        return s.recv(100) == b"pong:hi"
    except OSError:
        return False
    finally:
        s.close()


def free_host_port() -> int:
    """A high port nothing on the host listens on (random, to stay clear of parallel suites)."""
    used = sh("ss -Htanu")
    while True:
        p = random.randint(30000, 39999)
        if f":{p} " not in used:
            return p


def ip_of(result: dict[str, Any], version: int = 4) -> str:
    """The pod's first address of that family (a loopback plugin's 127.0.0.1/::1 skipped)."""
    return next(str(ipaddress.ip_interface(i["address"]).ip) for i in result["ips"]
                if ipaddress.ip_interface(i["address"]).version == version
                and not ipaddress.ip_interface(i["address"]).ip.is_loopback)


def run_plugin_exec(exe: str, env: dict[str, str], conf: dict[str, Any] | str | bytes) -> tuple[int, Any, str]:
    """Run a plugin executable exactly like a runtime: env + JSON on stdin; parse stdout."""
    data = conf if isinstance(conf, str | bytes) else json.dumps(conf)
    p = subprocess.run([exe], input=data if isinstance(data, bytes) else data.encode(),
                       env={**os.environ, **env}, capture_output=True)
    out = p.stdout.decode().strip()
    return p.returncode, (json.loads(out) if out else None), p.stderr.decode()


def udp_conntrack_entries(port: int) -> int:
    """How many conntrack entries the kernel holds for UDP flows to ``port``."""
    from pyroute2.conntrack import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    ct = Conntrack()
    try:
        return len(list(ct.dump_entries(tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP, dport=port))))
    finally:
        ct.close()
