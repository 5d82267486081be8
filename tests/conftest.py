"""Shared pytest setup: the suite runs as root on a real Linux host."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the kubeletpy suite creates namespaces, mounts and cgroups: run it as root")
