"""The local half of the store: build-busybox, lookups, snapshots, rm/prune, usage."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from cri.images import ImageInUse, ImageNotFound, ImageStore
from cri.images.errors import ImageError, InvalidReference
from cri.images.snapshot import Snapshotter

from .helpers import mountinfo

BUSYBOX = "kubeletpy.local/busybox:latest"


def test_build_busybox_is_reproducible_and_complete(store, tmp_path):
    img = store.build_busybox()
    other = ImageStore(tmp_path / "other").build_busybox()
    assert (img.id, img.manifest_digest) == (other.id, other.manifest_digest)
    assert img.repo_tags == [BUSYBOX]
    assert img.repo_digests == [f"kubeletpy.local/busybox@{img.manifest_digest}"]
    assert img.config["config"]["Cmd"] == ["sh"]
    assert any(e.startswith("PATH=") for e in img.runtime_config["Env"])
    (layer,) = store.layer_dirs(img)
    for applet in ("sh", "sleep", "true", "false", "ls", "cat", "echo", "httpd", "id", "hostname", "ps",
                   "mount", "env", "wget", "nc"):
        found = [d for d in ("bin", "sbin", "usr/bin", "usr/sbin") if (layer / d / applet).is_symlink()]
        assert found and os.readlink(layer / found[0] / applet) == "/bin/busybox", applet
    assert (layer / "bin" / "sh").is_symlink() and (layer / "bin" / "busybox").is_file()
    assert "nobody:x:65534:65534" in (layer / "etc" / "passwd").read_text()
    assert "nobody:x:65534:" in (layer / "etc" / "group").read_text()
    assert oct(os.stat(layer / "tmp").st_mode & 0o7777) == oct(0o1777)
    assert (layer / "root").is_dir()


def test_get_by_every_spelling(store):
    img = store.build_busybox()
    hexid = img.id.split(":")[1]
    for key in (BUSYBOX, "kubeletpy.local/busybox", img.id, hexid, hexid[:12], img.manifest_digest,
                f"kubeletpy.local/busybox@{img.manifest_digest}"):
        assert store.get(key).id == img.id, key
    with pytest.raises(ImageNotFound, match="not found"):
        store.get("busybox")
    with pytest.raises(ImageNotFound):
        store.get("sha256:" + "0" * 64)
    with pytest.raises(InvalidReference):
        store.get("NOT VALID")
    assert [i.id for i in store.list()] == [img.id]


def test_snapshot_runs_busybox_and_cleans_up(store, snaps):
    before = mountinfo(store.root)
    img = store.build_busybox()
    rootfs = snaps.prepare("c1", img)
    assert snaps.list() == ["c1"]
    assert any(f" {rootfs} " in line for line in mountinfo(store.root))
    out = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", "echo hello > /tmp/f; cat /tmp/f; id -un; ls /bin | wc -l"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out[:2] == ["hello", "root"] and int(out[2]) > 50
    # writes land in the container's upper dir, never in the shared layer
    assert (store.root / "snapshots" / "c1" / "upper" / "tmp" / "f").exists()
    assert not (store.layer_dirs(img)[0] / "tmp" / "f").exists()
    # a second container sees a pristine rootfs
    r2 = snaps.prepare("c2", img)
    assert not (r2 / "tmp" / "f").exists()
    with pytest.raises(ImageError, match="already exists"):
        snaps.prepare("c1", img)
    with pytest.raises(ImageError, match="invalid snapshot key"):
        snaps.prepare("../x", img)
    snaps.remove("c1")
    snaps.remove("c1")  # idempotent
    snaps.remove("c2")
    assert snaps.list() == []
    assert not (store.root / "snapshots" / "c1").exists()
    assert mountinfo(store.root) == before


def test_rm_refuses_in_use_images_and_prune_collects(store, snaps):
    img = store.build_busybox()
    store.tag("kubeletpy.local/other:1", img.manifest_digest)
    snaps.prepare("c1", img)
    assert store.remove("kubeletpy.local/other:1") == ["kubeletpy.local/other:1"]  # other tags remain
    with pytest.raises(ImageInUse, match="in use by container.*c1"):
        store.remove(BUSYBOX)
    with pytest.raises(ImageInUse):
        store.remove(img.id)
    assert store.get(BUSYBOX).id == img.id
    # force: untagged, blobs go, but the mounted layer stays until the container does
    store.remove(BUSYBOX, force=True)
    with pytest.raises(ImageNotFound):
        store.get(img.id)
    layer = store.layer_path(img.diff_ids[0])
    assert layer.is_dir()
    assert (snaps.mounts("c1") / "bin" / "busybox").exists()
    snaps.remove("c1")
    res = store.prune()
    assert res.layers == 1 and res.bytes > 1_000_000
    assert not layer.exists()
    assert list((store.dir / "blobs" / "sha256").iterdir()) == []
    assert store.fs_usage()[1] < 20


def test_fs_usage_counts_bytes_and_inodes(store):
    assert store.fs_usage() == (0, 0)
    store.build_busybox()
    used, inodes = store.fs_usage()
    assert used > 2 * 1_000_000  # the binary twice: compressed blob + unpacked layer
    assert inodes > 250  # applet symlinks


def test_snapshot_cycles_leave_nothing(store, snaps):
    """Speed is measured in bench/bench_images.py; here, many cycles must not leak."""
    img = store.build_busybox()
    before = Path("/proc/self/mountinfo").read_text().count(str(snaps.dir))
    for i in range(50):
        rootfs = snaps.prepare(f"s{i}", img)
        assert (rootfs / "bin" / "busybox").exists()
        snaps.remove(f"s{i}")
    assert Path("/proc/self/mountinfo").read_text().count(str(snaps.dir)) == before
    assert snaps.list() == []


def test_concurrent_builds_and_snapshots_agree(store):
    errors: list[BaseException] = []
    results: list[str] = []

    def work(i: int) -> None:
        try:
            s = ImageStore(store.root)
            img = s.build_busybox()
            sn = Snapshotter(store.root, s)
            sn.prepare(f"t{i}", img)
            results.append(img.id)
            sn.remove(f"t{i}")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert len(list(store.layers_dir.iterdir())) == 1


def test_rm_by_digest_reference_and_untagged_get(store):
    img = store.build_busybox()
    store.tag("kubeletpy.local/busybox:v2", img.manifest_digest)
    assert store.get("kubeletpy.local/busybox:v2").repo_tags == [BUSYBOX, "kubeletpy.local/busybox:v2"]
    removed = store.remove(f"kubeletpy.local/busybox@{img.manifest_digest}")
    assert sorted(removed) == [BUSYBOX, "kubeletpy.local/busybox:v2"]
    assert store.list() == []


def test_broken_registries_toml_only_matters_for_pulls(tmp_path):
    cfg = tmp_path / "registries.toml"
    cfg.write_text("not = [valid")
    store = ImageStore(tmp_path / "root", registries=cfg)
    assert store.build_busybox().repo_tags == [BUSYBOX]
    with pytest.raises(ImageError, match="not valid TOML"):
        store.pull("127.0.0.1:1/x:1")


def test_cleanup_removes_half_prepared_snapshots(store, snaps):
    img = store.build_busybox()
    snaps.prepare("ok", img)
    (snaps.dir / "crashed" / "upper").mkdir(parents=True)  # a crash before the record was written
    assert snaps.cleanup() == ["crashed"]
    assert snaps.list() == ["ok"] and snaps.image_of("ok") == img.id


def test_many_layers_still_mount(store, snaps, tmp_path):
    from .helpers import F, Layout

    lay = Layout(tmp_path / "oci")
    lay.tag(lay.image([[F(f"f{i}", str(i))] for i in range(60)]), "v1")
    (img,) = store.import_archive(lay.tarball(tmp_path / "deep.tar"))
    assert len(img.layers) == 60
    rootfs = snaps.prepare("deep", img)
    assert sorted(p.name for p in rootfs.iterdir()) == sorted(f"f{i}" for i in range(60))
    snaps.remove("deep")
    assert mountinfo(store.root) == []


def test_prune_sweeps_leftovers_of_killed_writers(store):
    store.build_busybox()
    (store.blobs.dir / ".tmp-killed").write_bytes(b"x" * 1000)
    (store.layers_dir / ".tmp-killed" / "usr").mkdir(parents=True)
    res = store.prune()
    assert (res.blobs, res.layers) == (0, 0) and res.bytes > 0
    assert not (store.blobs.dir / ".tmp-killed").exists() and not (store.layers_dir / ".tmp-killed").exists()
    assert store.get(BUSYBOX).repo_tags == [BUSYBOX]


def test_build_busybox_refuses_a_dynamic_binary(store):
    with pytest.raises(ImageError, match="dynamically linked"):
        store.build_busybox(busybox="/bin/ls")
    with pytest.raises(ImageError, match="not an ELF"):
        store.build_busybox(busybox="/etc/passwd")
    assert store.list() == []
