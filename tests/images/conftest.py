"""Fixtures: a real docker-registry on 127.0.0.1 and per-test image stores under tmp_path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.images import ImageStore
from cri.images.config import RegistriesConfig
from cri.images.snapshot import Snapshotter

from .helpers import Registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "root", registries=RegistriesConfig())


@pytest.fixture
def snaps(store: ImageStore) -> Iterator[Snapshotter]:
    s = Snapshotter(store.root, store)
    try:
        yield s
    finally:
        for key in s.list():
            with contextlib.suppress(Exception):
                s.remove(key)
