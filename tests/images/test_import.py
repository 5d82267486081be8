"""Importing `docker save` and OCI-layout tarballs."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from cri.images import DigestMismatch, ImageError, UnsafeLayer
from cri.images.manifest import DOCKER_MANIFEST

from .helpers import F, L, Layout, digest, gz, store_listing, tar_bytes


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path / "oci")
    amd = lay.image([[F("hello", "world")], [F("two", "2")]], config={"Cmd": ["/hello"]})
    arm = lay.image([[F("hello", "arm")]], arch="arm64")
    lay.tag(lay.index([arm, amd]), "v1")
    lay.tag(amd, "docker.io/me/app:v2")
    return lay


def test_oci_layout_tarball(store, layout, tmp_path):
    images = store.import_archive(layout.tarball(tmp_path / "My App.tar"))
    tags = sorted(t for i in images for t in i.repo_tags)
    assert tags == ["docker.io/me/app:v2", "kubeletpy.local/import/my-app:v1"]
    img = store.get("kubeletpy.local/import/my-app:v1")
    assert img.runtime_config["Cmd"] == ["/hello"]
    assert [(d / "hello").exists() for d in store.layer_dirs(img)] == [True, False]
    assert (store.layer_dirs(img)[0] / "hello").read_text() == "world"
    named = store.import_archive(tmp_path / "My App.tar", name="registry.local/team/app")
    assert "registry.local/team/app:v1" in named[0].repo_tags + named[-1].repo_tags
    with pytest.raises(ImageError, match="without tag"):
        store.import_archive(tmp_path / "My App.tar", name="x:1")


def test_skopeo_docker_archive(store, layout, tmp_path):
    archive = tmp_path / "saved.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{layout.path}:docker.io/me/app:v2", f"docker-archive:{archive}:test/app:v2"],
        check=True, timeout=60,
    )
    (img,) = store.import_archive(archive)
    assert img.repo_tags == ["docker.io/test/app:v2"]
    assert img.manifest["mediaType"] == DOCKER_MANIFEST
    assert (store.layer_dirs(img)[1] / "two").read_text() == "2"


def _docker_save(path: Path, layers: list[bytes], tags: list[str], compress: bool = False) -> None:
    """The classic `docker save` shape: <id>/layer.tar, with a symlink for a repeated layer."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": [digest(x) for x in layers]}}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

        add(f"{digest(cfg)[7:]}.json", cfg)
        names = []
        for i, layer in enumerate(layers):
            name = f"l{i}/layer.tar"
            if layer in layers[:i]:
                ti = tarfile.TarInfo(name)
                ti.type, ti.linkname = tarfile.SYMTYPE, f"../l{layers.index(layer)}/layer.tar"
                tf.addfile(ti)
            else:
                add(name, layer)
            names.append(name)
        add("manifest.json", json.dumps([{"Config": f"{digest(cfg)[7:]}.json", "RepoTags": tags,
                                          "Layers": names}]).encode())
        add("repositories", b"{}")
    data = buf.getvalue()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_classic_docker_save_gzipped_with_shared_layers(store, tmp_path):
    a, b = tar_bytes([F("a", "1")]), tar_bytes([F("b", "2"), L("c", "b")])
    _docker_save(tmp_path / "s.tar.gz", [a, b, a], ["busybox:old", "quay.io/x/y:1"], compress=True)
    (img,) = store.import_archive(tmp_path / "s.tar.gz")
    assert img.repo_tags == ["docker.io/library/busybox:old", "quay.io/x/y:1"]
    assert [d.name for d in store.layer_dirs(img)] == [digest(a)[7:], digest(b)[7:], digest(a)[7:]]
    assert store.get("busybox:old").id == img.id


def test_bad_archives_leave_the_store_unchanged(store, tmp_path, layout):
    store.build_busybox()
    before = store_listing(store.root)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar" * 100)
    with pytest.raises(ImageError, match="not a readable tar"):
        store.import_archive(junk)
    with pytest.raises(ImageError, match="no such file"):
        store.import_archive(tmp_path / "missing.tar")
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ImageError, match="neither"):
        store.import_archive(empty)
    # a blob whose bytes do not match its name
    for p in (layout.path / "blobs" / "sha256").iterdir():
        if p.read_bytes().startswith(b"\x1f\x8b"):
            p.write_bytes(gz(tar_bytes([F("hello", "tampered")])))
    with pytest.raises(DigestMismatch):
        store.import_archive(layout.tarball(tmp_path / "tampered.tar"))
    # a layer that tries to escape
    evil = tar_bytes([F("ok", "1"), L("up", "/"), F("up/etc/evil", "x")])
    _docker_save(tmp_path / "evil.tar", [tar_bytes([F("fine", "1")]), evil], ["evil:1"])
    with pytest.raises(UnsafeLayer, match="symlink"):
        store.import_archive(tmp_path / "evil.tar")
    assert not Path("/etc/evil").exists()
    assert store_listing(store.root) == before
