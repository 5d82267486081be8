"""Interop both ways: our plugins as executables (env + stdin, like any runtime), and the
reference plugins from /usr/lib/cni driven by our invoker."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from cnihelpers import Server, free_host_port, ip_of, pod_links, run_plugin_exec, sh, snapshot, tcp_ping

from cni.install import install_plugins
from cni.invoker import Invoker, parse_network_config

BIN = Path(sys.executable).parent
REF = "/usr/lib/cni"
needs_ref = pytest.mark.skipif(not os.path.exists(f"{REF}/bridge"), reason="containernetworking-plugins not installed")


def env(cmd: str, cid: str = "", netns: str = "", ifname: str = "eth0", path: str = "") -> dict[str, str]:
    return {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=x", "CNI_PATH": path}


def test_version_and_errors_as_executables(testnet):
    exe = str(BIN / "kubeletpy-bridge")
    rc, out, _ = run_plugin_exec(exe, env("VERSION"), {"cniVersion": "0.4.0"})
    assert rc == 0 and out == {"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    rc, out, err = run_plugin_exec(exe, env("ADD", "c1", "/proc/self/ns/net"), b"{not json")
    assert rc != 0 and out["code"] == 6 and out["msg"] and "details" in out and err
    rc, out, _ = run_plugin_exec(exe, env("ADD", "c1", ""), testnet.bridge_conf())
    assert rc != 0 and out["code"] == 4 and "CNI_NETNS" in out["details"]
    rc, out, _ = run_plugin_exec(exe, env("FROB", "c1", "/proc/self/ns/net"), testnet.bridge_conf())
    assert rc != 0 and out["code"] == 4 and "CNI_COMMAND" in out["msg"]
    rc, out, _ = run_plugin_exec(exe, env("ADD", "c1", "/run/netns/kptcni-nope"), testnet.bridge_conf())
    assert rc != 0 and out == {"cniVersion": "1.0.0", "code": 3, "msg": "network namespace does not exist",
                               "details": "CNI_NETNS=/run/netns/kptcni-nope"}
    rc, out, _ = run_plugin_exec(exe, env("ADD", "c1", "/proc/self/ns/net"), {**testnet.bridge_conf(), "cniVersion": "9.0.0"})
    assert rc != 0 and out["code"] == 1
    rc, out, _ = run_plugin_exec(str(BIN / "kubeletpy-host-local"), env("ADD", "c1", "/proc/self/ns/net"),
                                 {**testnet.bridge_conf(), "ipam": {"type": "host-local", "dataDir": str(testnet.data_dir)}})
    assert rc != 0 and out["code"] == 7 and "subnet" in out["details"]
    assert not testnet.data_dir.exists()


def test_our_plugins_as_executables_through_the_invoker(testnet, make_netns, tmp_path):
    """install_plugins() wrappers in a bin dir, invoker in exec mode: what containerd would do."""
    bindir = tmp_path / "bin"
    written = install_plugins(bindir)
    assert {p.name for p in written} >= {"bridge", "host-local", "loopback", "portmap", "kubeletpy-bridge"}
    inv = Invoker(bin_dirs=[str(bindir)], cache_dir=testnet.cache_dir, in_process=False)
    lst = testnet.conflist(bridge_type="kubeletpy-bridge")
    lst["plugins"].insert(0, {"type": "loopback"})
    net = parse_network_config(lst)
    ns1, ns2 = make_netns(), make_netns()
    hp = free_host_port()
    r1 = inv.add(net, "e1", ns1, "eth0", capability_args={"portMappings": [{"hostPort": hp, "containerPort": 8080}]})
    r2 = inv.add(net, "e2", ns2, "eth0")
    # loopback ran first: its lo entry is kept, bridge entries follow with shifted indexes
    assert [i["name"] for i in r1["interfaces"]][0] == "lo" and r1["ips"][0]["address"] == "127.0.0.1/8"
    assert r1["interfaces"][r1["ips"][-1]["interface"]]["name"] == "eth0"
    srv = Server(ns1)
    try:
        assert tcp_ping(ns2, ip_of(r1)) and tcp_ping(None, "127.0.0.1", hp)
    finally:
        srv.close()
    inv.check(net, "e1", ns1, "eth0")
    cached = json.loads((testnet.cache_dir / f"{testnet.name}-e1-eth0").read_text())
    assert cached["result"]["ips"] == r1["ips"] and cached["capabilityArgs"]["portMappings"][0]["hostPort"] == hp
    for cid, ns in (("e1", ns1), ("e2", ns2)):
        inv.delete(net, cid, ns, "eth0")
    assert ip_of(r2) != ip_of(r1)
    s = snapshot(testnet)
    assert s["leases"] == {} and s["nft"] == [] and pod_links(testnet) == []


@needs_ref
def test_reference_plugins_through_our_invoker(testnet, make_netns):
    """Debian's containernetworking-plugins bridge + host-local + portmap, exec'ed by our invoker."""
    before = sh("iptables-save -t nat")
    inv = Invoker(bin_dirs=[REF], cache_dir=testnet.cache_dir, in_process=False)
    net = parse_network_config(testnet.conflist())
    ns1, ns2 = make_netns(), make_netns()
    hp = free_host_port()
    r1 = inv.add(net, "ref1", ns1, "eth0", capability_args={"portMappings": [{"hostPort": hp, "containerPort": 8080, "protocol": "tcp"}]})
    r2 = inv.add(net, "ref2", ns2, "eth0")
    assert (testnet.lease_dir / ip_of(r1)).exists()  # the reference host-local wrote its lease in our dataDir
    srv = Server(ns1)
    try:
        assert tcp_ping(ns2, ip_of(r1))
        assert tcp_ping(None, ip_of(r1))
        assert tcp_ping(None, testnet.gateway(), hp)
    finally:
        srv.close()
    # (no CHECK here: the reference portmap's CHECK insists on an IPv6 DNAT chain on v4-only pods)
    inv.delete(net, "ref1", ns1, "eth0")
    inv.delete(net, "ref2", ns2, "eth0")
    assert testnet.leases() == {} and pod_links(testnet) == []
    assert ip_of(r2) not in sh("iptables-save -t nat")
    assert list(testnet.cache_dir.iterdir()) == []
    # only other suites' rules may differ; none of ours or the reference's for this subnet remain
    prefix = testnet.subnet.rsplit(".", 1)[0] + "."
    assert [x for x in sh("iptables-save -t nat").splitlines() if prefix in x] == \
        [x for x in before.splitlines() if prefix in x]


@needs_ref
def test_reference_bridge_delegates_to_our_host_local(testnet, make_netns, tmp_path):
    """The reference bridge finds our host-local first in CNI_PATH and execs it (delegation protocol)."""
    ours = tmp_path / "ours"
    install_plugins(ours, names="plain")
    for p in ours.iterdir():
        if p.name != "host-local":
            p.unlink()
    inv = Invoker(bin_dirs=[str(ours), REF], cache_dir=testnet.cache_dir, in_process=False)
    net = parse_network_config(testnet.conflist(portmap=False))
    ns = make_netns()
    r = inv.add(net, "mix", ns, "eth0")
    lease = (testnet.lease_dir / ip_of(r)).read_bytes()
    assert lease == b"mix\r\neth0" and (testnet.lease_dir / ".owners").is_dir()  # written by ours
    inv.delete(net, "mix", ns, "eth0")
    assert testnet.leases() == {} and pod_links(testnet) == []


@needs_ref
def test_our_bridge_delegates_to_a_foreign_ipam(testnet, make_netns):
    """IPAM types that are not ours are exec'ed from CNI_PATH (here the reference 'static')."""
    inv = Invoker(bin_dirs=[REF], cache_dir=testnet.cache_dir, in_process=True)
    addr = testnet.subnet.replace(".0/24", ".9/24")
    lst = testnet.conflist(portmap=False, ipMasq=False)
    lst["plugins"][0]["ipam"] = {"type": "static", "addresses": [{"address": addr, "gateway": testnet.gateway()}]}
    net = parse_network_config(lst)
    ns = make_netns()
    r = inv.add(net, "st", ns, "eth0")
    assert r["ips"][0]["address"] == addr and r["ips"][0]["interface"] == 2
    inv.delete(net, "st", ns, "eth0")
    assert pod_links(testnet) == []


def test_wrappers_point_at_this_install(tmp_path):
    written = install_plugins(tmp_path, names="plain")
    text = (tmp_path / "bridge").read_text()
    assert text.startswith("#!/bin/sh") and "kubeletpy-bridge" in text and os.access(tmp_path / "bridge", os.X_OK)
    assert len(written) == 4
    out = sh(f"echo '{{\"cniVersion\":\"1.0.0\"}}' | CNI_COMMAND=VERSION {tmp_path}/portmap")
    assert json.loads(out)["cniVersion"] == "1.0.0"
    assert shutil.which("kubeletpy-bridge", path=str(BIN))


def test_status_and_gc_as_executables(testnet, tmp_path):
    """1.1.0 verbs through the executable: STATUS says 50 when the range is full; GC prints nothing."""
    only = testnet.subnet.replace(".0/24", ".7")
    conf = {**testnet.bridge_conf(version="1.1.0"), "ipam": testnet.ipam(rangeStart=only, rangeEnd=only)}
    exe = str(BIN / "kubeletpy-host-local")
    assert run_plugin_exec(exe, env("STATUS"), conf)[0] == 0
    rc, out, _ = run_plugin_exec(exe, env("ADD", "s1", "/proc/self/ns/net"), conf)
    assert rc == 0 and out["ips"][0]["address"].endswith(".7/24")
    rc, out, _ = run_plugin_exec(exe, env("STATUS"), conf)
    assert rc != 0 and out["code"] == 50
    rc, out, _ = run_plugin_exec(exe, env("STATUS"), {**conf, "cniVersion": "1.0.0"})
    assert rc != 0 and out["code"] == 1  # STATUS is a 1.1.0 verb
    rc, out, _ = run_plugin_exec(exe, env("GC"), {**conf, "cni.dev/valid-attachments": []})
    assert rc == 0 and out is None and testnet.leases() == {}
