"""Pulls from a real docker-registry (images pushed with skopeo), through overlay mounts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from cri.images import DigestMismatch, ImageError, ImageNotFound, ImageStore
from cri.images.config import RegistriesConfig
from cri.images.manifest import DOCKER_MANIFEST, OCI_MANIFEST
from cri.images.snapshot import Snapshotter

from .helpers import D, Entry, F, H, L, Layout, Registry, free_port, mountinfo, running_proxy, store_listing


@dataclass
class Pushed:
    registry: Registry
    multi_digest: str  # the index digest of test/multi:v1


LAYER1 = [D("etc"), F("etc/a", "a1"), F("etc/b", "b1"), D("d"), F("d/x", "x"), F("d/y", "y"), D("keep"),
          F("keep/k", "k"), F("big", os.urandom(2_000_000))]
LAYER2 = [F("etc/.wh.b"), D("d"), F("d/.wh..wh..opq"), F("d/z", "z"), F("etc/c", "c"), L("link", "etc/a"),
          H("hl", "etc/c"), F("bin/run", "#!/bin/sh\n", 0o755)]
LAYER3 = [F("keep/.wh.k"), F("newfile", "n"), Entry("dev/null", "chr")]


@pytest.fixture(scope="session")
def pushed(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    tmp = tmp_path_factory.mktemp("layouts")
    lay = Layout(tmp / "oci")
    amd = lay.image([[F("arch", "amd64")], [F("second", "2")]], config={"Cmd": ["/bin/amd"]})
    arm = lay.image([[F("arch", "arm64")]], arch="arm64")
    arm["platform"]["variant"] = "v8"
    armv7 = lay.image([[F("arch", "arm")]], arch="arm")
    armv7["platform"]["variant"] = "v7"
    idx = lay.index([armv7, arm, amd])
    lay.tag(idx, "multi")
    lay.tag(lay.image([LAYER1, LAYER2, LAYER3]), "layers")
    plain = lay.image([LAYER1, LAYER2, LAYER3[:2]], compress=False)
    lay.tag(lay.image([[F("docker", "v2s2")]]), "docker")
    for i in range(2):
        lay.tag(lay.image([[F("n", str(i)), F("blob", os.urandom(300_000))]]), f"conc{i}")
    registry.push(lay.path, "multi", "test/multi:v1", all_platforms=True)
    registry.push(lay.path, "layers", "test/layers:v1")
    registry.push_raw(lay.path, plain, "test/plain:v1")
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "--format", "v2s2",
                    f"oci:{lay.path}:docker", f"docker://{registry.host}/test/docker:v1"], check=True, timeout=60)
    for i in range(2):
        registry.push(lay.path, f"conc{i}", f"test/conc{i}:v1")
    return Pushed(registry, idx["digest"])


def _merged(snaps: Snapshotter, key: str, img) -> Path:  # noqa: ANN001
    return snaps.prepare(key, img)


def test_multi_layer_whiteouts_through_overlay(store, snaps, pushed):
    before = mountinfo(store.root)
    img = store.pull(f"{pushed.registry.host}/test/layers:v1")
    assert img.manifest["mediaType"] == OCI_MANIFEST
    assert len(store.layer_dirs(img)) == 3
    root = snaps.prepare("c", img)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert files == ["big", "bin", "bin/run", "d", "d/z", "dev", "etc", "etc/a", "etc/c", "hl", "keep", "link",
                     "newfile"]  # dev/null (a device node) skipped
    assert (root / "etc" / "a").read_text() == "a1" and (root / "link").read_text() == "a1"
    assert os.readlink(root / "link") == "etc/a"
    assert (root / "hl").read_text() == "c"
    assert os.access(root / "bin" / "run", os.X_OK)
    layer2 = store.layer_dirs(img)[1]
    assert (layer2 / "hl").stat().st_ino == (layer2 / "etc" / "c").stat().st_ino
    assert stat.S_ISCHR(os.lstat(layer2 / "etc" / "b").st_mode)
    snaps.remove("c")
    assert mountinfo(store.root) == before


def test_uncompressed_layers_and_docker_schema2(store, pushed):
    host = pushed.registry.host
    plain = store.pull(f"{host}/test/plain:v1")
    assert plain.layers[0]["mediaType"].endswith(".tar")
    assert (store.layer_dirs(plain)[2] / "newfile").read_text() == "n"
    docker = store.pull(f"{host}/test/docker:v1")
    assert docker.manifest["mediaType"] == DOCKER_MANIFEST
    assert docker.layers[0]["mediaType"].endswith("tar.gzip")
    assert (store.layer_dirs(docker)[0] / "docker").read_text() == "v2s2"


def test_manifest_list_picks_host_platform(store, pushed):
    host = pushed.registry.host
    img = store.pull(f"{host}/test/multi:v1")
    assert (store.layer_dirs(img)[0] / "arch").read_text() == "amd64"
    assert img.runtime_config["Cmd"] == ["/bin/amd"]
    assert img.repo_digests == [f"{host}/test/multi@{pushed.multi_digest}"]
    arm = store.pull(f"{host}/test/multi:v1", platform=("linux", "arm", "v7"))
    assert (store.layer_dirs(arm)[0] / "arch").read_text() == "arm"
    with pytest.raises(ImageError, match=r"no image for linux/s390x.*linux/amd64"):
        store.pull(f"{host}/test/multi:v1", platform=("linux", "s390x", None))


def test_pull_by_digest_and_tag_at_digest(store, pushed):
    host = pushed.registry.host
    d = pushed.multi_digest
    by_digest = store.pull(f"{host}/test/multi@{d}")
    assert by_digest.repo_tags == [] and by_digest.repo_digests == [f"{host}/test/multi@{d}"]
    both = store.pull(f"{host}/test/multi:ignored@{d}")
    assert both.id == by_digest.id
    assert store.get(f"{host}/test/multi:whatever@{d}").id == by_digest.id
    with pytest.raises(ImageNotFound):
        store.pull(f"{host}/test/multi@sha256:" + "1" * 64)


def test_present_layers_are_not_downloaded_again(store, pushed):
    with running_proxy(pushed.registry.host, "plain") as proxy:
        store.pull(f"{proxy.host}/test/layers:v1")
        first = proxy.blob_gets()
        assert len(first) == 4  # config + 3 layers
        store.pull(f"{proxy.host}/test/plain:v1")  # shares nothing compressed: all new
        n = len(proxy.blob_gets())
        store.pull(f"{proxy.host}/test/layers:v1")
        assert len(proxy.blob_gets()) == n  # nothing fetched twice


def test_concurrent_pulls_download_once(tmp_path, pushed):
    root = tmp_path / "root"
    with running_proxy(pushed.registry.host, "plain") as proxy:
        proxy.delay = 0.3
        ref = f"{proxy.host}/test/conc0:v1"
        errors: list[BaseException] = []

        def pull() -> None:
            try:
                ImageStore(root, registries=RegistriesConfig()).pull(ref)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=pull) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        gets = proxy.blob_gets()
        assert len(gets) == len(set(gets)) == 2, gets
        # and across processes
        ref = f"{proxy.host}/test/conc1:v1"
        cmd = [sys.executable, "-m", "kubeletpy", "images", "--root", str(root),
               "--registries-config", "/dev/null", "pull", ref]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        gets = proxy.blob_gets()
        assert len(gets) == len(set(gets)) == 4, gets
    assert len(ImageStore(root).list()) == 2


def test_token_auth_follows_realm_with_scope(store, pushed):
    with running_proxy(pushed.registry.host, "token") as proxy:
        ref = f"{proxy.host}/test/layers:v1"
        store.build_busybox()
        before = store_listing(store.root)
        with pytest.raises(ImageError, match="refused anonymous access"):
            store.pull(ref)
        assert store_listing(store.root) == before
        img = store.pull(ref, auth=(proxy.USER, proxy.PASSWORD))
        assert img.repo_tags == [ref]
        req = proxy.token_requests[-1]
        assert req["query"]["service"] == ["test-registry"]
        assert "repository:test/layers:pull" in req["query"]["scope"]
        assert req["authorization"].startswith("Basic ")
        with pytest.raises(ImageError, match="refused the credentials"):
            store.pull(ref, auth=(proxy.USER, "wrong"))
    # credentials can come from registries.toml too
    with running_proxy(pushed.registry.host, "token") as proxy:
        cfg = store.root / "registries.toml"
        cfg.write_text(f'[registry."{proxy.host}"]\nusername = "alice"\npassword = "s3cret"\n')
        s2 = ImageStore(store.root, registries=cfg)
        assert s2.pull(f"{proxy.host}/test/docker:v1").repo_tags


def test_anonymous_token_flow_like_docker_hub(store, pushed):
    with running_proxy(pushed.registry.host, "token") as proxy:
        proxy.anonymous = True
        img = store.pull(f"{proxy.host}/test/multi:v1")
        assert (store.layer_dirs(img)[0] / "arch").read_text() == "amd64"
        assert all(r["authorization"] is None for r in proxy.token_requests)
        # one token per repository scope, reused for the manifest and every blob
        assert len(proxy.token_requests) == 1


def test_basic_auth(store, pushed):
    with running_proxy(pushed.registry.host, "basic") as proxy:
        ref = f"{proxy.host}/test/docker:v1"
        with pytest.raises(ImageError, match="requires a username and password"):
            store.pull(ref)
        assert store.pull(ref, auth=(proxy.USER, proxy.PASSWORD)).repo_tags == [ref]


def test_mirror_is_used_before_the_registry(tmp_path, pushed):
    dead = f"127.0.0.1:{free_port()}"  # the "upstream": nothing listens there
    with running_proxy(pushed.registry.host, "plain") as mirror:
        cfg = tmp_path / "registries.toml"
        cfg.write_text(f'[registry."{dead}"]\nmirrors = ["http://127.0.0.1:{free_port()}", "{mirror.host}"]\n')
        store = ImageStore(tmp_path / "root", registries=cfg)
        img = store.pull(f"{dead}/test/docker:v1")
        assert img.repo_tags == [f"{dead}/test/docker:v1"]
        assert mirror.blob_gets()


@pytest.mark.parametrize("mode, words", [("corrupt", "hashes to"), ("truncate", "bytes")])
def test_bad_blobs_leave_the_store_unchanged(store, pushed, mode, words):
    store.build_busybox()
    before, mounts = store_listing(store.root), mountinfo(store.root)
    with running_proxy(pushed.registry.host, mode) as proxy, pytest.raises(ImageError, match=words) as e:
        store.pull(f"{proxy.host}/test/layers:v1")
    if mode == "corrupt":
        assert isinstance(e.value, DigestMismatch)
    assert store_listing(store.root) == before
    assert mountinfo(store.root) == mounts
    assert [i.repo_tags for i in store.list()] == [["kubeletpy.local/busybox:latest"]]


def test_unknown_image_and_unreachable_registry(store, pushed):
    store.build_busybox()
    before = store_listing(store.root)
    with pytest.raises(ImageNotFound, match="not found"):
        store.pull(f"{pushed.registry.host}/test/nope:v1")
    with pytest.raises(ImageNotFound):
        store.pull(f"{pushed.registry.host}/test/layers:nope")
    with pytest.raises(ImageError, match="cannot reach registry.*refused"):
        store.pull(f"127.0.0.1:{free_port()}/x:1")
    assert store_listing(store.root) == before


def test_registries_config_rules(tmp_path):
    cfg = RegistriesConfig.from_dict({"registry": {"reg.example.com:5000": {"insecure": True},
                                                   "docker.io": {"mirrors": ["mirror.example.com"]}}})
    assert [e.base for e in cfg.endpoints("reg.example.com:5000")] == ["http://reg.example.com:5000"]
    assert [e.base for e in cfg.endpoints("quay.io")] == ["https://quay.io"]
    assert [e.base for e in cfg.endpoints("localhost:5000")] == ["http://localhost:5000"]
    assert [e.base for e in cfg.endpoints("docker.io")] == ["https://mirror.example.com", "https://registry-1.docker.io"]
    bad = RegistriesConfig.from_dict({"registry": {"docker.io": {"mirrors": ["http://mirror.example.com"]}}})
    with pytest.raises(ImageError, match="plain HTTP"):
        bad.endpoints("docker.io")
    p = tmp_path / "r.toml"
    p.write_text("[registry.x\n")
    with pytest.raises(ImageError, match="not valid TOML"):
        RegistriesConfig.load(p)
    p.write_text('[registry."x"]\nmirrorz = []\n')
    with pytest.raises(ImageError, match="unknown keys"):
        RegistriesConfig.load(p)
    with pytest.raises(ImageError, match="does not exist"):
        RegistriesConfig.load(tmp_path / "missing.toml")


def test_challenges_parse_and_remote_plain_http_realms_are_refused():
    from cri.images.config import Endpoint
    from cri.images.registry import RegistryClient, parse_challenge

    ch = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                         'scope="repository:library/busybox:pull"')
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:library/busybox:pull"}
    assert parse_challenge('Basic realm="x"').scheme == "basic"  # type: ignore[union-attr]
    client = RegistryClient("quay.io")
    ep = Endpoint("https://quay.io", "quay.io", mirror=False)
    bad = parse_challenge('Bearer realm="http://auth.example.com/token"')
    with pytest.raises(ImageError, match="refusing token realm"):
        client._authorize(ep, bad, "repository:x:pull", None)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="unsupported auth scheme"):
        client._authorize(ep, parse_challenge("Negotiate abc"), "s", None)  # type: ignore[arg-type]
