"""Layer unpacking: overlayfs whiteout translation and refusal of hostile tars."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from cri.images import ImageStore
from cri.images.errors import DigestMismatch, ImageError, UnsafeLayer
from cri.images.layer import OPAQUE_XATTR, unpack

from .helpers import D, Entry, F, H, L, digest, gz, store_listing, tar_bytes


def _unpack(tmp_path: Path, entries: list[Entry], compress: bool = True) -> Path:
    dest = tmp_path / "layer"
    dest.mkdir()
    raw = tar_bytes(entries)
    res = unpack(io.BytesIO(gz(raw) if compress else raw), dest, digest(raw))
    assert res.diff_id == digest(raw)
    return dest


def test_whiteouts_become_overlay_form(tmp_path):
    dest = _unpack(tmp_path, [D("d"), F("d/.wh..wh..opq"), F("d/keep", "k"), F(".wh.gone"), F("d/.wh.x")])
    st = os.lstat(dest / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert stat.S_ISCHR(os.lstat(dest / "d" / "x").st_mode)
    assert os.getxattr(dest / "d", OPAQUE_XATTR) == b"y"
    assert (dest / "d" / "keep").read_text() == "k"
    assert not any(p.name.startswith(".wh.") for p in dest.rglob("*"))


def test_files_links_modes_and_owners(tmp_path):
    dest = _unpack(
        tmp_path,
        [
            D("bin", 0o751),
            F("bin/tool", "#!/bin/sh\n", 0o4755, uid=1000, gid=1001),
            H("bin/tool2", "bin/tool"),
            L("bin/rel", "tool"),
            L("bin/abs", "/etc/passwd"),  # dangling outside-pointing symlink is fine: never followed here
            Entry("dev/null", "chr"),
            Entry("run/fifo", "fifo"),
        ],
        compress=False,
    )
    tool = dest / "bin" / "tool"
    st = tool.lstat()
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1000, 1001)
    assert st.st_mtime == 1_700_000_000
    assert (dest / "bin" / "tool2").lstat().st_ino == st.st_ino
    assert os.readlink(dest / "bin" / "rel") == "tool"
    assert os.readlink(dest / "bin" / "abs") == "/etc/passwd"
    assert stat.S_IMODE((dest / "bin").lstat().st_mode) == 0o751
    assert not (dest / "dev" / "null").exists()  # device nodes skipped
    assert stat.S_ISFIFO((dest / "run" / "fifo").lstat().st_mode)


def test_later_entries_replace_earlier_ones(tmp_path):
    dest = _unpack(tmp_path, [F("a", "1"), F("a", "2"), D("b"), F("b/x"), F("b", "file now"), L("c", "a"), F("c", "3")])
    assert (dest / "a").read_text() == "2"
    assert (dest / "b").read_text() == "file now"
    assert not (dest / "c").is_symlink() and (dest / "c").read_text() == "3"


@pytest.mark.parametrize(
    "entries, words",
    [
        ([F("../escape", "x")], "escapes"),
        ([F("a/../../escape", "x")], "escapes"),
        ([H("x", "../../../../etc/passwd")], "escapes"),
        ([H("x", "/etc/passwd")], "not inside this layer"),
        ([L("link", "/"), F("link/etc/evil", "x")], "symlink"),
        ([D("d"), L("d/up", "../../.."), F("d/up/evil", "x")], "symlink"),
        ([L("link", "/tmp"), Entry("link/.wh..wh..opq")], "symlink"),
    ],
)
def test_hostile_layers_are_refused(tmp_path, entries, words):
    outside = set(os.listdir("/tmp")), Path("/etc/passwd").read_bytes()
    dest = tmp_path / "layer"
    dest.mkdir()
    raw = tar_bytes(entries)
    with pytest.raises(UnsafeLayer) as e:
        unpack(io.BytesIO(raw), dest, None)
    assert words in str(e.value)
    assert (set(os.listdir("/tmp")), Path("/etc/passwd").read_bytes()) == outside
    assert not os.path.exists(tmp_path / "escape")


def test_diff_id_mismatch_and_garbage_are_errors(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DigestMismatch):
        unpack(io.BytesIO(tar_bytes([F("x")])), tmp_path / "a", "sha256:" + "0" * 64)
    (tmp_path / "b").mkdir()
    with pytest.raises(ImageError, match="not a valid tar"):
        unpack(io.BytesIO(gz(b"not a tar at all" * 100)), tmp_path / "b", None)
    (tmp_path / "c").mkdir()
    with pytest.raises(ImageError, match="not a valid tar"):
        unpack(io.BytesIO(gz(tar_bytes([F("x", os.urandom(100000))]))[:3000]), tmp_path / "c", None)


def test_store_leaves_nothing_behind_on_a_hostile_layer(tmp_path):
    store = ImageStore(tmp_path / "root")
    store.build_busybox()  # make the store exist, then prove a failure adds nothing
    before = store_listing(store.root)
    raw = tar_bytes([F("ok", "1"), F("../../evil", "x")])
    with pytest.raises(UnsafeLayer), store.writing():
        store.ensure_layer(store.blobs.put_bytes(gz(raw)), digest(raw))
    assert store_listing(store.root) == before
    assert not (tmp_path / "evil").exists()
