"""A fake Kubernetes API server (aiohttp, HTTPS, self-signed) that mounts the streaming
handlers, and helpers to drive the real kubectl binaries against it."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cri.streaming import ExecOptions, serve_exec, serve_portforward
from cri.streaming.local import ProcessExecBackend, TcpPortForwardBackend

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests on a fresh event loop (no pytest-asyncio in the dependencies)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), 60))
    return True


def kubectl_path(version: str) -> Path:
    return KUBECTL_DIR / f"kubectl.{version}"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _pod(ns: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": "0000-1111", "resourceVersion": "1"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "main", "ready": True, "state": {"running": {}}}],
        },
    }


@dataclass
class FakeAPI:
    url: str  # https, self-signed
    plain_url: str  # the same app on plain http
    kubeconfig: Path
    plain_kubeconfig: Path
    cache_dir: Path
    loop: asyncio.AbstractEventLoop
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    forward_to: dict[int, int] = field(default_factory=dict)
    # CRI-style URLs (/exec/<token>): the options were fixed when the URL was handed out.
    tokens: dict[str, ExecOptions] = field(default_factory=dict)

    kubectl_path = staticmethod(lambda version: kubectl_path(version))
    free_port = staticmethod(lambda: _free_port())

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _argv(self, version: str, plain_http: bool, args: tuple[str, ...]) -> list[str]:
        kubeconfig = self.plain_kubeconfig if plain_http else self.kubeconfig
        return [
            str(kubectl_path(version)),
            f"--kubeconfig={kubeconfig}",
            f"--cache-dir={self.cache_dir}",
            *args,
        ]

    def kubectl(
        self,
        version: str,
        *args: str,
        input: bytes | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        plain_http: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self._argv(version, plain_http, args),
            input=input,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )

    def kubectl_popen(
        self, version: str, *args: str, plain_http: bool = False, **kw: Any
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._argv(version, plain_http, args), **kw)


def build_app(api: FakeAPI, attach_command: list[str]) -> web.Application:
    exec_backend = ProcessExecBackend(attach_command=attach_command)

    @web.middleware
    async def record(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        api.requests.append((request.method, request.path_qs, dict(request.headers)))
        return await handler(request)

    async def version(_: web.Request) -> web.Response:
        return web.json_response(
            {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}
        )

    async def api_root(_: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})

    async def apis(_: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def api_v1(_: web.Request) -> web.Response:
        verbs = ["get", "list"]
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "v1",
                "resources": [
                    {
                        "name": "pods",
                        "singularName": "pod",
                        "namespaced": True,
                        "kind": "Pod",
                        "verbs": verbs,
                        "shortNames": ["po"],
                    },
                    {
                        "name": "pods/exec",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "PodExecOptions",
                        "verbs": ["create", "get"],
                    },
                    {
                        "name": "pods/attach",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "PodAttachOptions",
                        "verbs": ["create", "get"],
                    },
                    {
                        "name": "pods/portforward",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "PodPortForwardOptions",
                        "verbs": ["create", "get"],
                    },
                ],
            }
        )

    async def pod(request: web.Request) -> web.Response:
        return web.json_response(_pod(request.match_info["ns"], request.match_info["name"]))

    async def pod_exec(request: web.Request) -> web.StreamResponse:
        return await serve_exec(request, exec_backend)

    async def pod_attach(request: web.Request) -> web.StreamResponse:
        return await serve_exec(request, exec_backend, attach=True)

    async def pod_portforward(request: web.Request) -> web.StreamResponse:
        return await serve_portforward(request, TcpPortForwardBackend(port_map=api.forward_to))

    async def cri_exec(request: web.Request) -> web.StreamResponse:
        options = api.tokens.get(request.match_info["token"])
        if options is None:
            raise web.HTTPNotFound()
        return await serve_exec(request, exec_backend, options=options)

    app = web.Application(middlewares=[record])
    app.router.add_route("*", "/exec/{token}", cri_exec)
    base = "/api/v1/namespaces/{ns}/pods/{name}"
    app.router.add_get("/version", version)
    app.router.add_get("/api", api_root)
    app.router.add_get("/apis", apis)
    app.router.add_get("/api/v1", api_v1)
    app.router.add_get(base, pod)
    for suffix, handler in (("exec", pod_exec), ("attach", pod_attach), ("portforward", pod_portforward)):
        app.router.add_route("GET", f"{base}/{suffix}", handler)
        app.router.add_route("POST", f"{base}/{suffix}", handler)
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kubeconfig(server: str, extra: str) -> str:
    cluster = f'server: "{server}"' + (f", {extra}" if extra else "")
    return f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{{cluster}}}
users:
- name: u
  user: {{token: s3cr3t}}
contexts:
- name: fake
  context: {{cluster: fake, user: u, namespace: default}}
current-context: fake
"""


@pytest.fixture(scope="session")
def fake_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAPI]:
    tmp = tmp_path_factory.mktemp("fakeapi")
    cert, key = self_signed(tmp)
    port = _free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    plain_port = _free_port()
    kubeconfig, plain_kubeconfig = tmp / "kubeconfig", tmp / "kubeconfig.http"
    kubeconfig.write_text(_kubeconfig(f"https://127.0.0.1:{port}", "insecure-skip-tls-verify: true"))
    plain_kubeconfig.write_text(_kubeconfig(f"http://127.0.0.1:{plain_port}", ""))
    api = FakeAPI(
        f"https://127.0.0.1:{port}",
        f"http://127.0.0.1:{plain_port}",
        kubeconfig,
        plain_kubeconfig,
        tmp / "cache",
        loop,
    )
    # attach: a "main process" that greets, echoes stdin and exits 3.
    app = build_app(api, ["sh", "-c", "echo attached; cat; exit 3"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        await web.TCPSite(runner, "127.0.0.1", plain_port).start()
        return runner

    runner = api.run(start())
    try:
        yield api
    finally:
        api.run(runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def client_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="session")
def echo_port(fake_api: FakeAPI) -> int:
    """A TCP service for port-forward: answers every chunk upper-cased, closes after EOF.
    Pod port 80 leads to it; pod port 81 leads to a closed port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    async def start() -> int:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    port = fake_api.run(start())
    fake_api.forward_to.update({80: port, 81: _free_port()})
    return port
