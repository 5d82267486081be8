"""PullImage against a real registry (Debian's docker-registry) behind a Basic-auth gate: credentials honoured."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2 as pb
from cri.images.busybox import layer_tar
from kubeletpy.cli.crictl import CRIClient

from .conftest import Env, code_of, crictl, ctr_config, pod_config

USER, PASSWORD = "kube", "s3cret-pass"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def oci_archive(path: Path, tag: str, cmd: list[str]) -> None:
    """A one-layer OCI image-layout tarball of the host's busybox, for `skopeo copy oci-archive:`."""
    layer = layer_tar("/bin/busybox")
    gz = gzip.compress(layer, mtime=0)
    config = json.dumps({"architecture": "amd64" if os.uname().machine == "x86_64" else "arm64", "os": "linux",
                         "config": {"Cmd": cmd}, "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()

    def d(b: bytes) -> str:
        return "sha256:" + hashlib.sha256(b).hexdigest()

    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config),
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(gz),
                                       "size": len(gz)}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in (("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index),
                           *((f"blobs/sha256/{d(b)[7:]}", b) for b in (gz, config, manifest))):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


class BasicAuthGate:
    """Forwards to the registry only requests carrying the right Basic credentials."""

    def __init__(self, upstream: str) -> None:
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.denied = 0
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != want:
                    gate.denied += 1
                    body = b'{"errors":[{"code":"UNAUTHORIZED"}]}'
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="test"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                conn = http.client.HTTPConnection(upstream, timeout=30)
                conn.request(self.command, self.path, headers={k: v for k, v in self.headers.items()
                                                                if k.lower() == "accept"})
                resp = conn.getresponse()
                body = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in ("content-type", "docker-content-digest"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gated_registry(env: Env) -> Iterator[str]:
    d = env.base / "registry"
    d.mkdir(exist_ok=True)
    port = _free_port()
    (d / "config.yml").write_text(
        "version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {d / 'data'}}}}}\nhttp: {{addr: '127.0.0.1:{port}'}}\n")
    proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(d / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gate = None
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/v2/")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "docker-registry did not start"
            time.sleep(0.05)
        oci_archive(d / "bb.tar", "v1", ["sleep", "3600"])
        subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci-archive:{d / 'bb.tar'}:v1",
                        f"docker://127.0.0.1:{port}/private/busybox:v1"], check=True, capture_output=True,
                       timeout=60)
        gate = BasicAuthGate(f"127.0.0.1:{port}")
        yield gate.host
    finally:
        if gate is not None:
            gate.close()
        proc.terminate()
        proc.wait(10)


def test_pull_honours_credentials(cri: CRIClient, env: Env, gated_registry: str) -> None:
    ref = f"{gated_registry}/private/busybox:v1"
    code, msg = code_of(cri.pull, ref)
    assert code == grpc.StatusCode.UNKNOWN and ("password" in msg or "401" in msg or "credential" in msg), msg
    code, _ = code_of(cri.pull, ref, pb.AuthConfig(username=USER, password="wrong"))
    assert code == grpc.StatusCode.UNKNOWN
    assert not cri.image_status(ref).HasField("image")

    image_id = cri.pull(ref, pb.AuthConfig(username=USER, password=PASSWORD))
    st = cri.image_status(ref).image
    assert st.id == image_id and ref in st.repo_tags
    # the pulled image runs: its own Cmd (sleep) keeps the container up
    cfg = pod_config()
    sid = cri.run_pod(cfg)
    try:
        cc = ctr_config("pulled", image=pb.ImageSpec(image=ref))
        del cc.command[:]
        cid = cri.create_container(sid, cc, cfg)
        cri.start_container(cid)
        assert cri.exec_sync(cid, ["ps", "-o", "args"]).stdout.count(b"sleep 3600") == 1
    finally:
        cri.remove_pod(sid)
    crictl(env, "rmi", ref)
    assert not cri.image_status(ref).HasField("image")
    # crictl's --auth (base64 user:pass) and --creds forms
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert b"Image is up to date" in crictl(env, "pull", "--auth", token, ref).stdout
    crictl(env, "rmi", ref)
    crictl(env, "pull", "--creds", f"{USER}:{PASSWORD}", ref)
    assert cri.image_status(ref).image.id == image_id
    cri.remove_image(ref)
