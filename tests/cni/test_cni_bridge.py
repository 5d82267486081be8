"""bridge + host-local + portmap + loopback, in-process, against the real kernel."""

from __future__ import annotations

import ipaddress
import os
import time

import pytest
from cnihelpers import (
    Server,
    free_host_port,
    ip_of,
    pod_links,
    sh,
    snapshot,
    tcp_ping,
    udp_conntrack_entries,
    udp_ping,
)

from cni import firewall
from cni.invoker import Invoker, parse_network_config
from cni.plugins import run
from cni.plugins.bridge import host_veth_name
from cni.spec import (
    ERR_CHECK_FAILED,
    ERR_EXISTS,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_IPAM_EXHAUSTED,
    ERR_UNKNOWN_CONTAINER,
    CNIArgs,
    CNIError,
)


def invoker(net) -> Invoker:
    return Invoker(bin_dirs=["/usr/lib/cni"], cache_dir=net.cache_dir)


def test_two_pods_reach_each_other_gateway_and_hostport(testnet, make_netns):
    before = snapshot(testnet)
    inv = invoker(testnet)
    net = parse_network_config(testnet.conflist())
    ns1, ns2 = make_netns(), make_netns()
    hp = free_host_port()
    r1 = inv.add(net, "pod1", ns1, "eth0", capability_args={"portMappings": [
        {"hostPort": hp, "containerPort": 8080, "protocol": "tcp"},
        {"hostPort": hp, "containerPort": 8081, "protocol": "udp"}]})
    r2 = inv.add(net, "pod2", ns2, "eth0")
    ip1, ip2 = ip_of(r1), ip_of(r2)
    assert ip1 != ip2
    assert [i["name"] for i in r1["interfaces"]] == [testnet.bridge, host_veth_name(testnet.name, "pod1", "eth0"), "eth0"]
    assert r1["interfaces"][2]["sandbox"] == ns1 and r1["ips"][0]["interface"] == 2
    assert {"dst": "0.0.0.0/0", "gw": testnet.gateway()} in r1["routes"]
    assert sh(f"ip netns exec {os.path.basename(ns1)} ip route show default").startswith(f"default via {testnet.gateway()}")
    assert "mtu 1400" in sh(f"ip netns exec {os.path.basename(ns1)} ip link show eth0")  # the uplink's MTU

    srv1, srv2 = Server(ns1), Server(ns2)
    udp = Server(ns1, port=8081, udp=True)
    gw_port = free_host_port()
    gw_srv = Server(None, port=gw_port, bind=testnet.gateway())  # a host service on the gateway address
    try:
        assert tcp_ping(ns2, ip1)                           # pod -> pod over the bridge
        assert tcp_ping(ns1, ip2)
        assert tcp_ping(None, ip1)                          # host -> pod via the gateway address
        assert tcp_ping(ns1, testnet.gateway(), gw_port)     # pod -> gateway (host)
        assert tcp_ping(None, "127.0.0.1", hp)              # hostPort from the host itself (route_localnet)
        assert tcp_ping(None, testnet.gateway(), hp)        # hostPort on a host address
        assert tcp_ping(ns2, testnet.gateway(), hp)         # another pod through the hostPort
        assert tcp_ping(ns1, testnet.gateway(), hp)         # hairpin: the pod through its own hostPort
        assert udp_ping(None, "127.0.0.1", hp)              # UDP mapping
        assert udp_conntrack_entries(hp) >= 1
    finally:
        for s in (srv1, srv2, udp, gw_srv):
            s.close()

    inv.check(net, "pod1", ns1, "eth0")
    inv.delete(net, "pod1", ns1, "eth0")
    assert udp_conntrack_entries(hp) == 0  # the UDP flow would otherwise stay NATed to the gone pod
    inv.delete(net, "pod2", ns2, "eth0")
    inv.delete(net, "pod2", ns2, "eth0")  # DEL is idempotent
    assert pod_links(testnet) == []
    assert sh(f"ip netns exec {os.path.basename(ns1)} ip -o link").count(": eth0") == 0
    assert not tcp_ping(None, "127.0.0.1", hp, timeout=0.5)
    after = snapshot(testnet)
    assert after["leases"] == {} and after["nft"] == [] and after["iptables"] == []
    assert after["links"] == [testnet.bridge] and before["links"] == []
    assert list(testnet.cache_dir.iterdir()) == []


def test_second_add_fails_and_keeps_the_first(testnet, make_netns):
    conf = testnet.bridge_conf()
    ns = make_netns()
    args = CNIArgs("ADD", "podx", ns, "eth0")
    first = run("bridge", conf, args)
    with pytest.raises(CNIError) as e:
        run("bridge", conf, args)
    assert e.value.code == ERR_EXISTS and "already allocated to podx/eth0" in e.value.details
    # the first attachment is intact: lease, veth, address
    assert list(testnet.leases()) == [ip_of(first)]
    assert host_veth_name(testnet.name, "podx", "eth0") in pod_links(testnet)
    run("bridge", conf, CNIArgs("DEL", "podx", ns, "eth0"))
    assert testnet.leases() == {} and pod_links(testnet) == []


def test_add_into_a_taken_ifname_changes_nothing(testnet, make_netns):
    """CNI_IFNAME already used in the pod by someone else: error, and their interface survives."""
    ns = make_netns()
    nsname = os.path.basename(ns)
    sh(f"ip netns exec {nsname} ip link add eth0 type veth peer name other0")
    with pytest.raises(CNIError) as e:
        run("bridge", testnet.bridge_conf(), CNIArgs("ADD", "taken", ns, "eth0"))
    assert e.value.code == ERR_EXISTS and f"eth0 in {ns}" in e.value.details
    assert testnet.leases() == {} and pod_links(testnet) == []
    assert "eth0@other0" in sh(f"ip netns exec {nsname} ip -o link")


def test_del_with_missing_netns_and_no_prevresult(testnet, make_netns):
    conf = testnet.bridge_conf()
    ns = make_netns()
    run("bridge", conf, CNIArgs("ADD", "gone", ns, "eth0"))
    sh(f"ip netns del {os.path.basename(ns)}")
    run("bridge", conf, CNIArgs("DEL", "gone", ns, "eth0"))
    run("bridge", conf, CNIArgs("DEL", "gone", "", "eth0"))
    assert testnet.leases() == {} and pod_links(testnet) == [] and snapshot(testnet)["nft"] == []


def test_check_detects_a_removed_address(testnet, make_netns):
    inv = invoker(testnet)
    net = parse_network_config(testnet.conflist(portmap=False))
    ns = make_netns()
    r = inv.add(net, "chk", ns, "eth0")
    inv.check(net, "chk", ns, "eth0")
    sh(f"ip netns exec {os.path.basename(ns)} ip addr del {r['ips'][0]['address']} dev eth0")
    with pytest.raises(CNIError) as e:
        inv.check(net, "chk", ns, "eth0")
    assert e.value.code == ERR_CHECK_FAILED and "address" in e.value.details
    inv.delete(net, "chk", ns, "eth0")


def test_exhausted_range_leaves_nothing(testnet, make_netns):
    first = str(ipaddress.ip_network(testnet.subnet).network_address + 5)
    conf = testnet.bridge_conf(ipam=testnet.ipam(rangeStart=first, rangeEnd=first))
    ns1, ns2 = make_netns(), make_netns()
    run("bridge", conf, CNIArgs("ADD", "p1", ns1, "eth0"))
    links_before = pod_links(testnet)
    with pytest.raises(CNIError) as e:
        run("bridge", conf, CNIArgs("ADD", "p2", ns2, "eth0"))
    assert e.value.code == ERR_IPAM_EXHAUSTED and "no IP addresses available" in e.value.msg
    assert pod_links(testnet) == links_before
    assert "eth0" not in sh(f"ip netns exec {os.path.basename(ns2)} ip -o link")
    assert list(testnet.leases()) == [first]
    run("bridge", conf, CNIArgs("DEL", "p1", ns1, "eth0"))


def test_exhausted_range_creates_no_bridge(testnet, make_netns):
    conf = testnet.bridge_conf(ipam=testnet.ipam(rangeStart="10.250.0.1", rangeEnd="10.250.0.1"))
    conf["ipam"]["subnet"] = "10.250.0.0/30"
    conf["ipam"]["gateway"] = "10.250.0.2"
    conf["ipam"]["dataDir"] = str(testnet.data_dir)
    # reserve the only address for someone else first
    from cni.plugins import hostlocal
    hostlocal.add(conf, CNIArgs("ADD", "other", "/proc/self/ns/net", "eth0"))
    with pytest.raises(CNIError) as e:
        run("bridge", conf, CNIArgs("ADD", "p", make_netns(), "eth0"))
    assert e.value.code == ERR_IPAM_EXHAUSTED
    assert sh(f"ip -o link show {testnet.bridge}", check=False) == ""


@pytest.mark.parametrize("mutate,code,needle", [
    (lambda c: c.update(ipam={"type": "host-local", "dataDir": "/nonexistent"}), ERR_INVALID_CONFIG, "missing subnet"),
    (lambda c: c.pop("ipam"), ERR_INVALID_CONFIG, "IPAM"),
    (lambda c: c.update(mtu="big"), ERR_INVALID_CONFIG, "mtu"),
    (lambda c: c.update(isGateway="yes"), ERR_INVALID_CONFIG, "isGateway"),
    (lambda c: c.update(cniVersion="0.2.0"), 1, "incompatible"),
    (lambda c: c.update(bridge="x" * 16), ERR_INVALID_CONFIG, "bridge name"),
    (lambda c: c["ipam"].update(ranges=[[{"subnet": "10.251.0.0/16"}], [{"subnet": "10.251.3.0/24"}]]), ERR_INVALID_CONFIG, "overlap"),
])
def test_bad_config_creates_nothing(testnet, make_netns, mutate, code, needle):
    conf = testnet.bridge_conf()
    mutate(conf)
    ns = make_netns()
    with pytest.raises(CNIError) as e:
        run("bridge", conf, CNIArgs("ADD", "bad", ns, "eth0"))
    assert e.value.code == code and needle in str(e.value)
    assert sh(f"ip -o link show {testnet.bridge}", check=False) == ""
    assert not testnet.data_dir.exists()
    assert "eth0" not in sh(f"ip netns exec {os.path.basename(ns)} ip -o link")


def test_bad_netns_and_env(testnet, tmp_path):
    conf = testnet.bridge_conf()
    with pytest.raises(CNIError) as e:
        run("bridge", conf, CNIArgs("ADD", "c", "/run/netns/kptcni-doesnotexist", "eth0"))
    assert e.value.code == ERR_UNKNOWN_CONTAINER
    regular = tmp_path / "notans"
    regular.write_text("")
    with pytest.raises(CNIError) as e:
        run("bridge", conf, CNIArgs("ADD", "c", str(regular), "eth0"))
    assert e.value.code == ERR_INVALID_ENV and "not a network namespace" in e.value.msg
    for bad in (CNIArgs("ADD", "", "/proc/self/ns/net", "eth0"), CNIArgs("ADD", "c", "/proc/self/ns/net", "a/b"),
                CNIArgs("ADD", "-c", "/proc/self/ns/net", "eth0"), CNIArgs("ADD", "c", "relative", "eth0")):
        with pytest.raises(CNIError) as e:
            run("bridge", conf, bad)
        assert e.value.code == ERR_INVALID_ENV
    assert not testnet.data_dir.exists()


def test_dual_stack(testnet, make_netns):
    """One address per range set (v4 + v6), v6 default route, masquerade and host ports for both."""
    import socket

    v6 = f"fd00:{testnet.subnet.split('.')[1]}:{testnet.subnet.split('.')[2]}::/64"
    gw6 = str(ipaddress.ip_network(v6).network_address + 1)
    lst = testnet.conflist()
    lst["plugins"][0]["ipam"] = {"type": "host-local", "dataDir": str(testnet.data_dir),
                                 "ranges": [[{"subnet": testnet.subnet}], [{"subnet": v6}]]}
    net = parse_network_config(lst)
    inv = invoker(testnet)
    ns1, ns2 = make_netns(), make_netns()
    hp = free_host_port()
    r1 = inv.add(net, "d1", ns1, "eth0", capability_args={"portMappings": [{"hostPort": hp, "containerPort": 8080}]})
    inv.add(net, "d2", ns2, "eth0")
    assert {ipaddress.ip_interface(i["address"]).version for i in r1["ips"]} == {4, 6}
    assert {"dst": "::/0", "gw": gw6} in r1["routes"]
    rules = sh("nft list table inet kubeletpy_cni")
    assert f"ip6 saddr {ip_of(r1, 6)}" in rules and f"dnat ip6 to [{ip_of(r1, 6)}]:8080" in rules
    srv = Server(ns1, port=8080, family=socket.AF_INET6)  # dual-stack socket: v4 and v6
    try:
        assert tcp_ping(ns2, ip_of(r1, 6))                    # pod -> pod over IPv6
        assert tcp_ping(None, gw6, hp)                        # host port on the v6 gateway address
        assert tcp_ping(None, testnet.gateway(), hp)          # and on the v4 one
    finally:
        srv.close()
    for cid, ns in (("d1", ns1), ("d2", ns2)):
        inv.delete(net, cid, ns, "eth0")
    assert testnet.leases() == {} and ip_of(r1, 6) not in sh("nft list ruleset")


def test_iptables_backend_masq_and_portmap(testnet, make_netns):
    inv = invoker(testnet)
    lst = testnet.conflist(firewallBackend="iptables")
    lst["plugins"][1]["firewallBackend"] = "iptables"
    net = parse_network_config(lst)
    ns = make_netns()
    hp = free_host_port()
    r = inv.add(net, "ipt", ns, "eth0", capability_args={"portMappings": [{"hostPort": hp, "containerPort": 8080}]})
    key = firewall.attachment_key(testnet.name, "ipt", "eth0")
    rules = sh("iptables-save -t nat")
    assert f"KP-MASQ-{key}" in rules and f"KP-HP-{key}" in rules and ip_of(r) in rules
    srv = Server(ns)
    try:
        assert tcp_ping(None, "127.0.0.1", hp)
    finally:
        srv.close()
    inv.check(net, "ipt", ns, "eth0")
    inv.delete(net, "ipt", ns, "eth0")
    assert key not in sh("iptables-save -t nat")
    assert snapshot(testnet)["iptables"] == []


def test_loopback_plugin(make_netns):
    ns = make_netns()
    conf = {"cniVersion": "1.0.0", "name": "kpt-lo", "type": "loopback"}
    res = run("loopback", conf, CNIArgs("ADD", "lo1", ns, "lo"))
    assert res["ips"][0]["address"] == "127.0.0.1/8"
    assert "UP" in sh(f"ip netns exec {os.path.basename(ns)} ip -o link show lo").split(">")[0]
    run("loopback", conf, CNIArgs("CHECK", "lo1", ns, "lo"))
    run("loopback", conf, CNIArgs("DEL", "lo1", ns, "lo"))
    run("loopback", conf, CNIArgs("DEL", "lo1", "/run/netns/kptcni-gone", "lo"))


def test_result_formats_per_version(testnet, make_netns):
    ns = make_netns()
    conf = testnet.bridge_conf(version="0.4.0", ipMasq=False)
    t = time.monotonic()
    r = run("bridge", conf, CNIArgs("ADD", "v04", ns, "eth0"))
    assert time.monotonic() - t < 2
    assert r["cniVersion"] == "0.4.0" and r["ips"][0]["version"] == "4"
    assert all("mtu" not in i for i in r["interfaces"])
    run("bridge", {**conf, "prevResult": r}, CNIArgs("CHECK", "v04", ns, "eth0"))
    run("bridge", {**conf, "prevResult": r}, CNIArgs("DEL", "v04", ns, "eth0"))


def test_concurrent_in_process_adds_from_threads(testnet, make_netns):
    """The runtime calls the plugins from many threads at once: netns switching is per thread."""
    from concurrent.futures import ThreadPoolExecutor

    inv = invoker(testnet)
    net = parse_network_config(testnet.conflist(portmap=False))
    nss = [make_netns() for _ in range(12)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: inv.add(net, f"t{i}", nss[i], "eth0"), range(12)))
    ips = [ip_of(r) for r in results]
    assert len(set(ips)) == 12
    for i, ns in enumerate(nss):  # every address landed in the right namespace
        assert f"inet {ips[i]}/" in sh(f"ip netns exec {os.path.basename(ns)} ip -4 -o addr show eth0")
    assert "kptcni" not in os.readlink("/proc/thread-self/ns/net")  # this thread never moved
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: inv.delete(net, f"t{i}", nss[i], "eth0"), range(12)))
    assert pod_links(testnet) == [] and testnet.leases() == {} and snapshot(testnet)["nft"] == []


def test_mtu_hairpin_promisc_options(testnet, make_netns):
    conf = testnet.bridge_conf(version="1.1.0", mtu=1280, promiscMode=True, hairpinMode=True, ipMasq=False)
    ns = make_netns()
    r = run("bridge", conf, CNIArgs("ADD", "opt", ns, "eth0"))
    veth = r["interfaces"][1]["name"]
    assert "mtu 1280" in sh(f"ip netns exec {os.path.basename(ns)} ip link show eth0")
    assert "mtu 1280" in sh(f"ip link show {veth}")
    assert open(f"/sys/class/net/{veth}/brport/hairpin_mode").read().strip() == "1"
    assert "PROMISC" in sh(f"ip link show {testnet.bridge}")
    assert r["interfaces"][2]["mtu"] == 1280 and r["interfaces"][1]["mac"] in sh(f"ip link show {veth}")
    run("bridge", conf, CNIArgs("DEL", "opt", ns, "eth0"))


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_gc_removes_rules_of_unlisted_attachments(testnet, make_netns, backend):
    inv = invoker(testnet)
    lst = testnet.conflist(version="1.1.0", firewallBackend=backend)
    lst["plugins"][1]["firewallBackend"] = backend
    net = parse_network_config(lst)
    ns1, ns2 = make_netns(), make_netns()
    pm = {"portMappings": [{"hostPort": free_host_port(), "containerPort": 80}]}
    r1 = inv.add(net, "keep", ns1, "eth0", capability_args=pm)
    r2 = inv.add(net, "stale", ns2, "eth0", capability_args={"portMappings": [{"hostPort": free_host_port(), "containerPort": 80}]})
    fw = firewall.get_backend(backend)
    k1, k2 = (firewall.attachment_key(testnet.name, c, "eth0") for c in ("keep", "stale"))
    assert fw.has_masq(k2) and fw.has_portmap(k2)
    assert inv.gc(net, [("keep", "eth0")]) == []
    assert not fw.has_masq(k2) and not fw.has_portmap(k2) and ip_of(r2) not in testnet.leases()
    assert fw.has_masq(k1) and fw.has_portmap(k1) and ip_of(r1) in testnet.leases()
    # a GC for another network must not touch this one
    other = parse_network_config({**lst, "name": testnet.name + "-other"})
    inv.gc(other, [])
    assert fw.has_masq(k1) and fw.has_portmap(k1)
    inv.delete(net, "keep", ns1, "eth0")
    inv.delete(net, "stale", ns2, "eth0")
    s = snapshot(testnet)
    assert s["nft"] == [] and s["iptables"] == [] and s["leases"] == {}


def test_portmap_host_ip_and_check(testnet, make_netns):
    inv = invoker(testnet)
    net = parse_network_config(testnet.conflist())
    ns = make_netns()
    hp = free_host_port()
    inv.add(net, "hip", ns, "eth0", capability_args={"portMappings": [
        {"hostPort": hp, "containerPort": 8080, "protocol": "tcp", "hostIP": testnet.gateway()}]})
    srv = Server(ns)
    try:
        assert tcp_ping(None, testnet.gateway(), hp)
        assert not tcp_ping(None, "127.0.0.1", hp, timeout=0.5)  # bound to the one host address only
    finally:
        srv.close()
    inv.check(net, "hip", ns, "eth0")
    firewall.get_backend().remove_portmap(firewall.attachment_key(testnet.name, "hip", "eth0"))
    with pytest.raises(CNIError) as e:
        inv.check(net, "hip", ns, "eth0")
    assert e.value.code == ERR_CHECK_FAILED and "host port" in e.value.details
    inv.delete(net, "hip", ns, "eth0")
    bad = parse_network_config(testnet.conflist())
    with pytest.raises(CNIError) as e:
        inv.add(bad, "hip2", ns, "eth0", capability_args={"portMappings": [{"hostPort": 0, "containerPort": 80}]})
    assert e.value.code == ERR_INVALID_CONFIG and "hostPort" in e.value.details
    assert pod_links(testnet) == [] and testnet.leases() == {}


def test_failure_after_ipam_rolls_back(testnet, make_netns):
    """The bridge name is taken by a non-bridge device: found after IPAM ran, so ADD must undo it."""
    sh(f"ip link add {testnet.bridge} type veth peer name {testnet.bridge}p")  # removed with the fixture
    ns = make_netns()
    with pytest.raises(CNIError) as e:
        run("bridge", testnet.bridge_conf(), CNIArgs("ADD", "rb", ns, "eth0"))
    assert e.value.code == ERR_INVALID_CONFIG and "not a bridge" in e.value.details
    assert testnet.leases() == {} and snapshot(testnet)["nft"] == []
    assert host_veth_name(testnet.name, "rb", "eth0") not in sh("ip -o link")
    assert "eth0" not in sh(f"ip netns exec {os.path.basename(ns)} ip -o link")
