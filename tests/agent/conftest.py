"""Fixtures of the agent's end-to-end tests: one real cluster per module (see harness.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # short base path: unix socket paths under it must stay below 108 bytes
    c = Cluster(Path(tempfile.mkdtemp(prefix="kpa-", dir="/tmp")))
    try:
        c.start()
        yield c
    finally:
        leftovers = c.close()
        logs = {n: c.log(n)[-4000:] for n in ("agent", "runtime")}
        c.purge()
        assert not leftovers, f"host not clean after the cluster stopped: {leftovers}\n{logs}"
