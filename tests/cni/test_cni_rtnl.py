"""cni.rtnl, the hand-packed rtnetlink requests of ADD, against the kernel in a private netns:
what they create must read back through iproute2 exactly as intended, and kernel errors
must carry the errno the plugins test for."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import subprocess
from collections.abc import Callable

import pytest

from cni import netns, rtnl


def ip_json(ns: str, *args: str) -> list[dict]:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def test_veth_address_and_routes_read_back(make_netns: Callable[[], str]) -> None:
    host_path, pod_path = make_netns(), make_netns()
    host, pod = os.path.basename(host_path), os.path.basename(pod_path)
    subprocess.run(["ip", "-n", host, "link", "add", "br0", "type", "bridge"], check=True)
    br_index = ip_json(host, "link", "show", "br0")[0]["ifindex"]
    hfd, pfd = netns.open_netns(host_path), netns.open_netns(pod_path)
    try:
        with netns.run_in_netns(hfd, rtnl.RtnlSocket) as h:
            h.add_veth("veth-kpt", "02:11:22:33:44:55", 1400, br_index, "eth0", pfd)
            with pytest.raises(rtnl.NetlinkError) as exc:  # same name again: the errno ADD maps to "exists"
                h.add_veth("veth-kpt", "02:11:22:33:44:56", 1400, br_index, "eth1", pfd)
            assert exc.value.code == errno.EEXIST
        link = ip_json(host, "-d", "link", "show", "veth-kpt")[0]
        assert (link["address"], link["mtu"], link["master"]) == ("02:11:22:33:44:55", 1400, "br0")
        assert "UP" in link["flags"] and link["linkinfo"]["info_kind"] == "veth"
        peer = ip_json(pod, "link", "show", "eth0")[0]
        assert peer["mtu"] == 1400

        inet, ns = netns.netns_sockets(pfd)
        with inet, ns:
            idx = netns.if_index(inet, "eth0")
            netns.if_set_up(inet, "eth0", True)
            ns.add_address(idx, ipaddress.ip_interface("10.77.1.5/24"))
            ns.add_address(idx, ipaddress.ip_interface("fd77::5/64"), 0x02)  # IFA_F_NODAD
            ns.add_route(ipaddress.ip_network("0.0.0.0/0"), "10.77.1.1", idx)
            ns.add_route(ipaddress.ip_network("10.78.0.0/16"), "10.77.1.1", idx)
            ns.add_route(ipaddress.ip_network("::/0"), "fd77::1", idx)
            with pytest.raises(rtnl.NetlinkError) as exc:
                ns.add_route(ipaddress.ip_network("0.0.0.0/0"), "10.77.1.1", idx)
            assert exc.value.code == errno.EEXIST
            with pytest.raises(rtnl.NetlinkError) as exc:  # a gateway not on any link
                ns.add_route(ipaddress.ip_network("10.99.0.0/16"), "192.0.2.1", idx)
            assert exc.value.code == errno.ENETUNREACH
        addrs = {(a["local"], a["prefixlen"], a.get("broadcast")) for a in ip_json(pod, "addr", "show", "eth0")[0]
                 ["addr_info"] if a["scope"] == "global"}
        assert addrs == {("10.77.1.5", 24, "10.77.1.255"), ("fd77::5", 64, None)}
        routes = {(r["dst"], r.get("gateway"), r["protocol"]) for r in ip_json(pod, "-d", "route", "show")
                  if "gateway" in r}
        assert routes == {("default", "10.77.1.1", "boot"), ("10.78.0.0/16", "10.77.1.1", "boot")}
        assert [r["gateway"] for r in ip_json(pod, "-6", "route", "show", "default")] == ["fd77::1"]
    finally:
        os.close(hfd)
        os.close(pfd)

