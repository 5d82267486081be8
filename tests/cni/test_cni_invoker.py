"""Invoker: config loading and version choice, chain failure cleanup, cache, startup repair."""

from __future__ import annotations

import json
import os

import pytest
from cnihelpers import ip_of, pod_links, sh, snapshot

from cni.invoker import Invoker, load_conf_dir, parse_network_config
from cni.spec import ERR_DECODE, ERR_INCOMPATIBLE_VERSION, ERR_INVALID_CONFIG, ERR_PLUGIN_NOT_FOUND, CNIError


def test_conf_dir_first_by_name_and_single_conf(tmp_path):
    (tmp_path / "20-b.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "b", "plugins": [{"type": "bridge"}]}))
    (tmp_path / "10-a.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "a", "type": "bridge", "bridge": "x"}))
    (tmp_path / "05-broken.conflist").write_text("{nope")
    (tmp_path / "README").write_text("ignored")
    net = load_conf_dir(tmp_path)
    assert net.name == "a" and net.cni_version == "0.4.0" and net.plugins == [{"type": "bridge", "bridge": "x"}]
    assert load_conf_dir(tmp_path, name="b").plugins == [{"type": "bridge"}]
    with pytest.raises(CNIError) as e:
        load_conf_dir(tmp_path, name="zzz")
    assert e.value.code == ERR_INVALID_CONFIG and "05-broken" in e.value.details


def test_version_selection_and_bad_lists():
    net = parse_network_config({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "2.0.0"], "name": "n",
                                "plugins": [{"type": "bridge"}]})
    assert net.cni_version == "1.1.0"
    for bad, code in ((b"[1]", ERR_DECODE), (b"{x", ERR_DECODE),
                      ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, ERR_INVALID_CONFIG),
                      ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a/b"}]}, ERR_INVALID_CONFIG),
                      ({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}, ERR_INVALID_CONFIG),
                      ({"cniVersion": "0.1.0", "name": "n", "plugins": [{"type": "x"}]}, ERR_INCOMPATIBLE_VERSION)):
        with pytest.raises(CNIError) as e:
            parse_network_config(bad)
        assert e.value.code == code


def test_unknown_plugin_type_fails_cleanly(testnet, make_netns):
    inv = Invoker(bin_dirs=["/usr/lib/cni"], cache_dir=testnet.cache_dir)
    lst = testnet.conflist(portmap=False)
    lst["plugins"].append({"type": "kpt-no-such-plugin"})
    net = parse_network_config(lst)
    ns = make_netns()
    with pytest.raises(CNIError) as e:
        inv.add(net, "u1", ns, "eth0")
    assert e.value.code == ERR_PLUGIN_NOT_FOUND and "kpt-no-such-plugin" in e.value.msg
    # the bridge step that had succeeded was rolled back by the invoker
    assert pod_links(testnet) == [] and testnet.leases() == {} and not testnet.cache_dir.exists()
    assert "eth0" not in sh(f"ip netns exec {os.path.basename(ns)} ip -o link")


def test_gc_and_status(testnet, make_netns):
    inv = Invoker(cache_dir=testnet.cache_dir)
    net = parse_network_config(testnet.conflist(version="1.1.0", portmap=False))
    ns = make_netns()
    inv.add(net, "g1", ns, "eth0")
    inv.status(net)
    assert inv.gc(net, [("g1", "eth0")]) == []
    assert len(testnet.leases()) == 1
    assert inv.gc(net, []) == []
    assert testnet.leases() == {}
    inv.delete(net, "g1", ns, "eth0")


def test_startup_repair_releases_stale_leases(testnet, make_netns):
    inv = Invoker(cache_dir=testnet.cache_dir)
    net = parse_network_config(testnet.conflist(portmap=True))
    ns_dead, ns_live = make_netns(), make_netns()
    dead = inv.add(net, "dead", ns_dead, "eth0", capability_args={"portMappings": [{"hostPort": 31999, "containerPort": 80}]})
    live = inv.add(net, "live", ns_live, "eth0")
    # a lease whose ADD never reached the cache (crash between IPAM and the end of ADD)
    orphan = testnet.subnet.replace(".0/24", ".200")
    (testnet.lease_dir / orphan).write_text("orphan\r\neth0")
    # the runtime restarts: the "dead" pod's netns is gone
    sh(f"ip netns del {os.path.basename(ns_dead)}")
    removed = inv.repair(net, live_container_ids=["live"])
    assert removed == [("dead", "eth0")]
    assert list(testnet.leases()) == [ip_of(live)]
    assert [p.name for p in testnet.cache_dir.iterdir()] == [f"{testnet.name}-live-eth0"]
    assert ip_of(dead) not in "\n".join(snapshot(testnet)["nft"])
    assert pod_links(testnet) == [p["name"] for p in live["interfaces"][1:2]]
    inv.delete(net, "live", ns_live, "eth0")
    assert snapshot(testnet)["leases"] == {} and snapshot(testnet)["nft"] == []
