"""Fixtures: a real 3-member etcd cluster on 127.0.0.1 (tmp data dirs), shared by a module's
tests (each uses its own key prefix), and a fresh one for tests that kill members."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .etcdcluster import EtcdCluster


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    yield c
    c.stop()


@pytest.fixture
def etcd_fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd-fresh")).start()
    yield c
    c.stop()
