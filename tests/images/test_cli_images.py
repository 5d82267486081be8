"""`kubeletpy images …` end to end, through kubeletpy.cli.main."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cri.images.snapshot import Snapshotter
from kubeletpy.cli import main
from kubeletpy.cli.images import Progress

from .helpers import F, Layout


@pytest.fixture
def run(tmp_path, capsys):
    root = str(tmp_path / "root")

    def run(*args: str) -> tuple[int, str, str]:
        rc = main(["images", "--root", root, "--registries-config", "/dev/null", *args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    run.root = root  # type: ignore[attr-defined]
    return run


def test_build_list_inspect_rm_prune(run):
    rc, out, _ = run("build-busybox")
    assert rc == 0 and "built kubeletpy.local/busybox:latest sha256:" in out
    rc, out, _ = run("list")
    assert out.splitlines()[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert out.splitlines()[1].split()[:2] == ["kubeletpy.local/busybox", "latest"]
    rc, out, _ = run("inspect", "kubeletpy.local/busybox")
    doc = json.loads(out)
    assert doc["id"].startswith("sha256:") and doc["manifest_digest"].startswith("sha256:")
    assert doc["config"]["config"]["Cmd"] == ["sh"] and len(doc["layers"]) == 1
    rc, out, _ = run("fsinfo")
    assert json.loads(out)["inodes_used"] > 250

    snaps = Snapshotter(run.root)
    snaps.prepare("ctr1", snaps.store.get(doc["id"]))
    try:
        rc, _, err = run("rm", "kubeletpy.local/busybox")
        assert rc == 1 and "in use by container(s) ctr1" in err
    finally:
        snaps.remove("ctr1")
    rc, out, _ = run("rm", doc["id"][7:19])
    assert rc == 0 and "untagged kubeletpy.local/busybox:latest" in out
    rc, out, _ = run("prune")
    assert rc == 0 and out.startswith("removed 0 blobs")
    rc, out, _ = run("list", "-q")
    assert out == ""


@pytest.mark.parametrize(
    "args, words",
    [
        (("inspect", "nope"), "error: image 'nope' not found"),
        (("pull", "x/Case"), "error: invalid reference 'x/Case': repository name must be lowercase"),
        (("rm", "nope"), "not found"),
        (("import", "/nonexistent.tar"), "error: /nonexistent.tar: no such file"),
        (("pull", "127.0.0.1:1/x:1"), "error: cannot reach registry http://127.0.0.1:1"),
        (("pull", "--platform", "linux", "x"), "error: bad --platform"),
    ],
)
def test_errors_exit_1_with_a_message(run, args, words):
    rc, _, err = run(*args)
    assert rc == 1
    assert words in err
    assert "Traceback" not in err


def test_pull_and_import(run, registry, tmp_path):
    lay = Layout(tmp_path / "oci")
    lay.tag(lay.image([[F("x", "1")], [F("y", "2")]]), "v1")
    registry.push(lay.path, "v1", "cli/app:v1")
    ref = f"{registry.host}/cli/app:v1"
    rc, out, err = run("pull", ref)
    assert rc == 0 and out.startswith(f"pulled {ref} sha256:")
    lines = err.splitlines()
    assert sum(line.endswith(("downloaded 119B", "downloaded 121B")) or " downloaded " in line for line in lines) == 2
    assert "\x1b[" not in err  # not a TTY: plain lines
    rc, out, _ = run("import", str(lay.tarball(tmp_path / "app.tar")), "--name", "local/app")
    assert rc == 0 and out.startswith("imported ") and "docker.io/local/app:v1" in out
    rc, out, _ = run("list")
    assert "cli/app" in out and "docker.io/local/app" in out


def test_tty_progress_redraws_bars():
    buf = io.StringIO()
    p = Progress(buf, tty=True)
    d = "sha256:" + "ab" * 32
    p(d, "downloading", 0, 1000)
    p(d, "downloading", 1000, 1000)
    p(d, "unpacked", 0, 0)
    text = buf.getvalue()
    assert "\x1b[1A" in text and "[" + "=" * 30 + "]" in text and "unpacked" in text


def test_console_script(tmp_path):
    exe = Path(sys.executable).parent / "kubeletpy"
    r = subprocess.run([str(exe), "images", "--root", str(tmp_path), "list"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("IMAGE")
