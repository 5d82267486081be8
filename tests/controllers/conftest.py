"""Fixtures: a fresh control plane per test (nodes are cluster-wide, so tests must not share
one) and an asyncio loop thread for the scheduler/controllers under test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scheduler.cluster import ControlPlane, Loop


@pytest.fixture
def cp(tmp_path) -> Iterator[ControlPlane]:  # type: ignore[no-untyped-def]
    c = ControlPlane(tmp_path).start()
    yield c
    c.stop()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.stop()
