"""host-local IPAM: allocation order, validation, release, exhaustion, concurrency, GC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cni.plugins import hostlocal
from cni.spec import ERR_EXISTS, ERR_INVALID_CONFIG, ERR_IPAM_EXHAUSTED, ERR_NOT_AVAILABLE, CNIArgs, CNIError


def conf(tmp_path: Path, **ipam: object) -> dict:
    return {"cniVersion": "1.0.0", "name": "kpt-hl", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(tmp_path), **ipam}}


def args(cid: str, ifname: str = "eth0", **kw: str) -> CNIArgs:
    return CNIArgs("ADD", container_id=cid, netns="/proc/self/ns/net", ifname=ifname, **kw)


def test_allocates_round_robin_and_skips_gateway(tmp_path):
    c = conf(tmp_path, subnet="10.250.1.0/29", routes=[{"dst": "0.0.0.0/0"}])
    r1 = hostlocal.add(c, args("a"))
    assert r1["ips"] == [{"address": "10.250.1.2/29", "gateway": "10.250.1.1"}]
    assert r1["routes"] == [{"dst": "0.0.0.0/0"}]
    assert hostlocal.add(c, args("b"))["ips"][0]["address"] == "10.250.1.3/29"
    hostlocal.delete(c, args("a"))
    # round-robin continues after the last reserved address instead of reusing .2 at once
    assert hostlocal.add(c, args("c"))["ips"][0]["address"] == "10.250.1.4/29"
    lease = (tmp_path / "kpt-hl" / "10.250.1.3").read_bytes()
    assert lease == b"b\r\neth0"


def test_range_start_end_and_exhaustion(tmp_path):
    c = conf(tmp_path, subnet="10.250.2.0/24", rangeStart="10.250.2.10", rangeEnd="10.250.2.11")
    assert hostlocal.add(c, args("a"))["ips"][0]["address"] == "10.250.2.10/24"
    assert hostlocal.add(c, args("b"))["ips"][0]["address"] == "10.250.2.11/24"
    with pytest.raises(CNIError) as e:
        hostlocal.add(c, args("c"))
    assert e.value.code == ERR_IPAM_EXHAUSTED and "10.250.2.10-10.250.2.11" in e.value.details
    with pytest.raises(CNIError) as e:
        hostlocal.status(c, args("x"))
    assert e.value.code == ERR_NOT_AVAILABLE
    hostlocal.delete(c, args("a"))
    hostlocal.status(c, args("x"))
    assert hostlocal.add(c, args("c"))["ips"][0]["address"] == "10.250.2.10/24"


def test_duplicate_add_and_idempotent_delete(tmp_path):
    c = conf(tmp_path, subnet="10.250.3.0/24")
    hostlocal.add(c, args("a"))
    with pytest.raises(CNIError) as e:
        hostlocal.add(c, args("a"))
    assert e.value.code == ERR_EXISTS
    hostlocal.add(c, args("a", ifname="net1"))  # same container, other interface: allowed
    hostlocal.delete(c, args("a"))
    hostlocal.delete(c, args("a"))
    assert set(os.listdir(tmp_path / "kpt-hl")) >= {"10.250.3.3"}
    assert "10.250.3.2" not in os.listdir(tmp_path / "kpt-hl")


@pytest.mark.parametrize("ipam,needle", [
    ({}, "missing subnet"),
    ({"subnet": "nonsense"}, "not a CIDR"),
    ({"subnet": "10.250.4.0/24", "rangeStart": "10.250.5.1"}, "not inside subnet"),
    ({"subnet": "10.250.4.0/24", "rangeStart": "10.250.4.20", "rangeEnd": "10.250.4.10"}, "after rangeEnd"),
    ({"subnet": "10.250.4.0/24", "gateway": "10.9.9.9"}, "gateway"),
    ({"ranges": [[{"subnet": "10.250.4.0/24"}], [{"subnet": "10.250.4.128/25"}]]}, "overlap"),
    ({"ranges": [[{"subnet": "10.250.4.0/24"}, {"subnet": "fd00:250::/64"}]]}, "mixes"),
    ({"subnet": "10.250.4.0/31"}, "too small"),
])
def test_bad_config_is_code_7_and_writes_nothing(tmp_path, ipam, needle):
    with pytest.raises(CNIError) as e:
        hostlocal.add(conf(tmp_path, **ipam), args("a"))
    assert e.value.code == ERR_INVALID_CONFIG
    assert needle in str(e.value)
    assert not (tmp_path / "kpt-hl").exists()


def test_dual_stack_and_requested_ip(tmp_path):
    c = conf(tmp_path, ranges=[[{"subnet": "10.250.6.0/24"}], [{"subnet": "fd00:250:6::/64"}]])
    r = hostlocal.add(c, args("a"))
    assert [i["address"] for i in r["ips"]] == ["10.250.6.2/24", "fd00:250:6::2/64"]
    r = hostlocal.add(c, args("b", args="IgnoreUnknown=1;IP=10.250.6.77"))
    assert r["ips"][0]["address"] == "10.250.6.77/24"
    with pytest.raises(CNIError) as e:
        hostlocal.add(c, args("c", args="IP=10.250.6.77"))
    assert e.value.code == ERR_EXISTS
    # the failed request must not keep the v6 address it did not get to use
    assert sorted(p for p in os.listdir(tmp_path / "kpt-hl") if p[0] in "1f") == [
        "10.250.6.2", "10.250.6.77", "fd00:250:6::2", "fd00:250:6::3"]


def test_gc_releases_leases_not_in_valid_attachments(tmp_path):
    c = conf(tmp_path, subnet="10.250.7.0/24")
    for cid in "abc":
        hostlocal.add(c, args(cid))
    released = hostlocal.gc({**c, "cni.dev/valid-attachments": [{"containerID": "b", "ifname": "eth0"}]}, args("x"))
    assert sorted(released) == ["10.250.7.2", "10.250.7.4"]
    assert hostlocal.Store(tmp_path, "kpt-hl").leases().keys() == {__import__("ipaddress").ip_address("10.250.7.3")}


def test_concurrent_adds_from_many_processes_never_share_an_ip(tmp_path):
    """40 plugin processes at once (exec'ed like a runtime would) on a 64-address range."""
    c = conf(tmp_path, subnet="10.250.8.0/26")
    exe = str(Path(sys.executable).parent / "kubeletpy-host-local")
    procs = []
    for i in range(40):
        env = {**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"c{i}", "CNI_NETNS": "/proc/self/ns/net",
               "CNI_IFNAME": "eth0", "CNI_PATH": ""}
        p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        p.stdin.write(json.dumps(c).encode())
        p.stdin.close()
        procs.append(p)
    addrs = []
    for p in procs:
        out = p.stdout.read()
        assert p.wait() == 0, out
        addrs.append(json.loads(out)["ips"][0]["address"])
    assert len(set(addrs)) == 40
    owners = {ip: o for ip, o in hostlocal.Store(tmp_path, "kpt-hl").leases().items()}
    assert sorted(o[0] for o in owners.values()) == sorted(f"c{i}" for i in range(40))
