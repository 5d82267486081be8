"""Build OCI layouts with tarfile/json, run docker-registry and a misbehaving proxy.

Test images are made from scratch so every byte, whiteout and platform entry is
known; skopeo pushes them into a real docker-registry so the pull path is the
same as against a real registry.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import secrets
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- tar layers ---------------------------------------------------------------------------
@dataclass
class Entry:
    name: str
    kind: str = "file"  # file | dir | symlink | hardlink | chr | fifo
    data: bytes = b""
    link: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0


def F(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:  # noqa: N802
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode=mode, **kw)


def D(name: str, mode: int = 0o755) -> Entry:  # noqa: N802
    return Entry(name, "dir", mode=mode)


def L(name: str, target: str) -> Entry:  # noqa: N802
    return Entry(name, "symlink", link=target)


def H(name: str, target: str) -> Entry:  # noqa: N802
    return Entry(name, "hardlink", link=target)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.mtime = 1_700_000_000
            ti.uid, ti.gid = e.uid, e.gid
            if e.kind == "file":
                ti.type, ti.size, ti.mode = tarfile.REGTYPE, len(e.data), e.mode or 0o644
                tf.addfile(ti, io.BytesIO(e.data))
                continue
            if e.kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, e.mode or 0o755
            elif e.kind == "symlink":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e.link, 0o777
            elif e.kind == "hardlink":
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, e.link, 0o644
            elif e.kind == "chr":
                ti.type, ti.mode, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 0o666, 1, 3
            elif e.kind == "fifo":
                ti.type, ti.mode = tarfile.FIFOTYPE, 0o644
            tf.addfile(ti)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# ---- OCI layouts --------------------------------------------------------------------------
@dataclass
class Layout:
    """An OCI image layout directory being built."""

    path: Path
    refs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        d = digest(data)
        (self.path / "blobs" / "sha256" / d[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    def image(
        self,
        layers: list[list[Entry] | bytes],
        config: dict[str, Any] | None = None,
        arch: str = "amd64",
        compress: bool = True,
    ) -> dict[str, Any]:
        """Add an image; returns its manifest descriptor (with platform)."""
        descs, diff_ids = [], []
        for layer in layers:
            raw = layer if isinstance(layer, bytes) else tar_bytes(layer)
            diff_ids.append(digest(raw))
            descs.append(self.blob(gz(raw), OCI_LAYER_GZIP) if compress else self.blob(raw, OCI_LAYER))
        cfg = {
            "architecture": arch,
            "os": "linux",
            "config": config or {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        cdesc = self.blob(json.dumps(cfg).encode(), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc, "layers": descs}
        m = self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)
        m["platform"] = {"os": "linux", "architecture": arch}
        return m

    def index(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.blob(json.dumps(idx).encode(), OCI_INDEX)

    def tag(self, desc: dict[str, Any], name: str) -> None:
        d = {k: v for k, v in desc.items() if k != "platform"}
        d["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.refs.append(d)
        idx = {"schemaVersion": 2, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(idx))

    def tarball(self, dest: Path) -> Path:
        with tarfile.open(dest, "w") as tf:
            for p in sorted(self.path.rglob("*")):
                tf.add(p, arcname=str(p.relative_to(self.path)), recursive=False)
        return dest


# ---- docker-registry ----------------------------------------------------------------------
class Registry:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.dir = tmp
        cfg = tmp / "config.yml"
        cfg.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {tmp / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '{self.host}'}}\n"
        )
        self.log = open(tmp / "registry.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["/usr/bin/docker-registry", "serve", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/v2/")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"docker-registry did not start: {(tmp / 'registry.log').read_text()}")
            time.sleep(0.05)

    def push(self, layout: Path, tag: str, dest: str, all_platforms: bool = False) -> None:
        cmd = ["skopeo", "copy", "-q", "--dest-tls-verify=false"]
        if all_platforms:
            cmd.append("--all")
        cmd += [f"oci:{layout}:{tag}", f"docker://{self.host}/{dest}"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def push_raw(self, layout: Path, desc: dict[str, Any], dest: str) -> None:
        """Upload blobs and the manifest byte-for-byte (skopeo would gzip plain layers)."""
        import requests

        repo, tag = dest.rsplit(":", 1)
        base = f"http://{self.host}/v2/{repo}"
        manifest = (layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes()
        doc = json.loads(manifest)
        for blob in [doc["config"], *doc["layers"]]:
            data = (layout / "blobs" / "sha256" / blob["digest"][7:]).read_bytes()
            r = requests.post(f"{base}/blobs/uploads/", timeout=10)
            r.raise_for_status()
            loc = r.headers["Location"]
            loc = loc if loc.startswith("http") else f"http://{self.host}{loc}"
            sep = "&" if "?" in loc else "?"
            requests.put(f"{loc}{sep}digest={blob['digest']}", data=data, timeout=10).raise_for_status()
        requests.put(
            f"{base}/manifests/{tag}", data=manifest, headers={"Content-Type": desc["mediaType"]}, timeout=10
        ).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---- a reverse proxy that can demand auth or misbehave ------------------------------------
class Proxy:
    """Forwards /v2/ to the registry; `mode` decides what it does to requests and blobs.

    modes: plain, token (Docker bearer-token flow with a /token realm on the same
    server), basic, corrupt (flips a byte of every blob), truncate (closes blobs
    half-way while promising the full length).
    """

    USER, PASSWORD = "alice", "s3cret"

    def __init__(self, upstream: str, mode: str = "plain") -> None:
        self.upstream = upstream
        self.mode = mode
        self.anonymous = False  # token mode: hand out tokens without credentials, like Docker Hub
        self.delay = 0.0  # seconds to stall each blob response, to make concurrent pulls overlap
        self.token_requests: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.tokens: dict[str, list[str]] = {}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                proxy.handle(self)

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None  # type: ignore[method-assign]  # clients hanging up is fine
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def blob_gets(self) -> list[str]:
        return [p for m, p in self.requests if m == "GET" and "/blobs/" in p]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _basic_ok(self, h: http.server.BaseHTTPRequestHandler) -> bool:
        want = "Basic " + base64.b64encode(f"{self.USER}:{self.PASSWORD}".encode()).decode()
        return h.headers.get("Authorization") == want

    @staticmethod
    def _reply(h: http.server.BaseHTTPRequestHandler, code: int, body: bytes, headers: dict[str, str]) -> None:
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        u = urlsplit(h.path)
        self.requests.append((h.command, u.path))
        if u.path == "/token":
            q = parse_qs(u.query)
            self.token_requests.append({"query": q, "authorization": h.headers.get("Authorization")})
            if not self._basic_ok(h) and not (self.anonymous and not h.headers.get("Authorization")):
                return self._reply(h, 401, b'{"details":"bad credentials"}', {"Content-Type": "application/json"})
            tok = secrets.token_hex(8)
            self.tokens[tok] = q.get("scope", [])
            body = {"access_token" if self.anonymous else "token": tok, "expires_in": 300}
            return self._reply(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        repo = u.path[len("/v2/") :].rsplit("/", 2)[0] if u.path.count("/") >= 4 else ""
        if self.mode == "token":
            auth = h.headers.get("Authorization", "")
            scopes = self.tokens.get(auth.removeprefix("Bearer "), None) if auth.startswith("Bearer ") else None
            if scopes is None or (repo and f"repository:{repo}:pull" not in scopes):
                chal = f'Bearer realm="http://{self.host}/token",service="test-registry"'
                if repo:
                    chal += f',scope="repository:{repo}:pull"'
                return self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": chal})
        if self.mode == "basic" and not self._basic_ok(h):
            return self._reply(h, 401, b"{}", {"WWW-Authenticate": 'Basic realm="test"'})
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept",)}
        conn.request(h.command, h.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        out = {k: v for k, v in resp.getheaders() if k.lower() in ("content-type", "docker-content-digest")}
        is_blob = "/blobs/sha256:" in u.path and resp.status == 200 and h.command == "GET"
        if is_blob and self.delay:
            time.sleep(self.delay)
        if is_blob and self.mode == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if is_blob and self.mode == "truncate" and len(body) > 1:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return None
        return self._reply(h, resp.status, body, out)


def store_listing(root: Path) -> list[tuple[str, int]]:
    """Every path under the image store with its size, to prove a failure changed nothing."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root / "images"):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out.append((str(p.relative_to(root)), p.lstat().st_size if n in filenames else 0))
    return sorted(out)


def mountinfo(root: Path) -> list[str]:
    """Mounts below `root`; other engineers' tests mount things on this host concurrently."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in line]


@contextlib.contextmanager
def running_proxy(upstream: str, mode: str) -> Iterator[Proxy]:
    p = Proxy(upstream, mode)
    try:
        yield p
    finally:
        p.close()
