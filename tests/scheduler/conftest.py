"""Fixtures from tests/support/cluster.py: `cp`, a fresh control plane per test (nodes are
cluster-wide, so tests must not share one), and `loop`, an asyncio loop thread for the
scheduler/controllers under test."""

from __future__ import annotations

from support.cluster import cp, loop

__all__ = ["cp", "loop"]
