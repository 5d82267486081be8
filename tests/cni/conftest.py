"""Fixtures for the CNI tests: private netns, bridge, subnet and state dirs, removed even on failure.

Other suites run on this host at the same time, so everything is named
``kpt<random>`` / ``kptcni-<random>`` and subnets come from 10.250-254.x.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cnihelpers import PodNet, _cleanup_iptables, pod_links, random_subnet, sh, snapshot
from support.host import remove_nat_rules


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Factory for private network namespaces (``/run/netns/kptcni-<rand>``), deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"kptcni-{secrets.token_hex(4)}"
        sh(f"ip netns add {name}")
        made.append(name)
        return f"/run/netns/{name}"

    yield make
    for name in made:
        sh(f"ip netns del {name}", check=False)
    assert not [n for n in made if n in sh("ip netns list")], "netns left behind"


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[PodNet]:
    tag = secrets.token_hex(2)
    net = PodNet(name=f"kpt-{secrets.token_hex(4)}", bridge=f"kpt{tag}", subnet=random_subnet(),
                  data_dir=tmp_path / "networks", cache_dir=tmp_path / "results")
    yield net
    # Leak check on every test that used a network: nothing of it may remain in the
    # kernel besides the (shared, by design persistent) bridge.
    left = snapshot(net)
    leaks = {"veths on bridge": pod_links(net), "nft": left["nft"], "iptables": left["iptables"]}
    sh(f"ip link del {net.bridge}", check=False)
    remove_nat_rules(net.subnet)
    _cleanup_iptables(net)
    assert not any(leaks.values()), f"test leaked {leaks}"


