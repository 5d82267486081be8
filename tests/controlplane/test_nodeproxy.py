"""pods/log, exec, attach, portforward through the API server to a node agent.

The agent here is a fake: an aiohttp HTTPS server (self-signed, like the real agent's) on
127.0.0.1 that serves the kubelet URLs with the `cri.streaming` handlers (host processes,
host TCP ports) and a canned `/containerLogs`. It is registered as a Node whose InternalIP is
127.0.0.1 and whose daemonEndpoints name its port; pods are bound to it. Real kubectl then
drives the API server, which must find the agent and proxy to it with its own credential.
"""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import ipaddress
import json
import os
import select
import signal
import socket
import ssl
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cri.streaming import serve_exec, serve_portforward
from cri.streaming.local import ProcessExecBackend, TcpPortForwardBackend
from kubeletpy.controlplane.errors import APIError

from .conftest import ControlPlane

NODE = "fake-agent-node"
LINES = 5


@dataclass
class FakeAgent:
    port: int
    loop: asyncio.AbstractEventLoop
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path_qs, upgrade
    forward_to: dict[int, int] = field(default_factory=dict)

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def _self_signed(tmp: Any) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{NODE}@1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NODE),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    crt, kp = tmp / "agent.crt", tmp / "agent.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return str(crt), str(kp)


def _agent_app(agent: FakeAgent) -> web.Application:
    backend = ProcessExecBackend(attach_command=["sh", "-c", "echo attached; cat; exit 3"])

    @web.middleware
    async def authn(request: web.Request, handler: Any) -> web.StreamResponse:
        agent.requests.append((request.method, request.path_qs, request.headers.get("Upgrade", "")))
        # the API server authenticates with its kubelet client certificate, never a token
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(x[0] for x in (peer or {}).get("subject", ()))
        if subject.get("commonName") != "kube-apiserver-kubelet-client" or "Authorization" in request.headers:
            return web.Response(status=401, text="Unauthorized")
        return await handler(request)

    async def logs(request: web.Request) -> web.StreamResponse:
        q = request.query
        c = request.match_info["container"]
        lines = [f"{c} line {i}\n".encode() for i in range(1, LINES + 1)]
        if q.get("tailLines"):
            lines = lines[-int(q["tailLines"]):]
        if q.get("timestamps") == "true":
            lines = [b"2026-01-01T00:00:00.000000000Z " + ln for ln in lines]
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for ln in lines:
            await resp.write(ln)
        if q.get("follow") == "true":
            for i in range(3):
                await asyncio.sleep(0.3)
                await resp.write(f"{c} follow {i}\n".encode())
        await resp.write_eof()
        return resp

    async def exec_(request: web.Request) -> web.StreamResponse:
        return await serve_exec(request, backend)

    async def attach(request: web.Request) -> web.StreamResponse:
        return await serve_exec(request, backend, attach=True)

    async def portforward(request: web.Request) -> web.StreamResponse:
        return await serve_portforward(request, TcpPortForwardBackend(port_map=agent.forward_to))

    app = web.Application(middlewares=[authn])
    app.router.add_get("/containerLogs/{ns}/{pod}/{container}", logs)
    for method in ("GET", "POST"):
        app.router.add_route(method, "/exec/{ns}/{pod}/{container}", exec_)
        app.router.add_route(method, "/attach/{ns}/{pod}/{container}", attach)
        app.router.add_route(method, "/portForward/{ns}/{pod}", portforward)
    return app


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
def agent(cp: ControlPlane, api: requests.Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAgent]:
    tmp = tmp_path_factory.mktemp("agent")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    crt, key = _self_signed(tmp)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(crt, key)
    tls.verify_mode = ssl.CERT_REQUIRED  # as an agent that knows the cluster CA
    tls.load_verify_locations(cafile=str(cp.data / "pki" / "ca.crt"))
    fa = FakeAgent(0, loop)

    async def start() -> tuple[web.AppRunner, int, int]:
        runner = web.AppRunner(_agent_app(fa))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        return runner, port, echo.sockets[0].getsockname()[1]

    runner, fa.port, echo_port = fa.run(start())
    fa.forward_to[80] = echo_port
    r = api.post(f"{cp.url}/api/v1/nodes", json={"metadata": {"name": NODE}})
    assert r.status_code in (201, 409), r.text
    status = {"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                       {"type": "Hostname", "address": NODE}],
                         "daemonEndpoints": {"kubeletEndpoint": {"Port": fa.port}}}}
    r = api.patch(f"{cp.url}/api/v1/nodes/{NODE}/status", json=status,
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    try:
        yield fa
    finally:
        api.delete(f"{cp.url}/api/v1/nodes/{NODE}")
        fa.run(runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _bound_pod(cp: ControlPlane, api: requests.Session, ns: str, name: str, containers: tuple[str, ...] = ("main",),
               node: str = NODE) -> None:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                            "spec": {"containers": [{"name": c, "image": "busybox:1.36"} for c in containers]}}
    if node:
        body["spec"]["nodeName"] = node
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods", json=body)
    assert r.status_code == 201, r.text
    st = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                     "containerStatuses": [{"name": c, "ready": True, "restartCount": 0, "image": "busybox:1.36",
                                            "imageID": "", "state": {"running": {}}} for c in containers]}}
    r = api.patch(f"{cp.url}/api/v1/namespaces/{ns}/pods/{name}/status", json=st,
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------- logs

@pytest.mark.parametrize("version", [27, 33])
def test_kubectl_logs(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str, version: int) -> None:
    _bound_pod(cp, api, ns, "web")
    r = cp.kubectl("logs", "web", "-n", ns, version=version, check=True)
    assert r.stdout == "".join(f"main line {i}\n" for i in range(1, LINES + 1))
    r = cp.kubectl("logs", "web", "-n", ns, "--tail=2", "--timestamps", version=version, check=True)
    assert r.stdout.splitlines() == [f"2026-01-01T00:00:00.000000000Z main line {i}" for i in (4, 5)]
    last = [p for m, p, _ in agent.requests if p.startswith(f"/containerLogs/{ns}/web/main")][-1]
    assert "tailLines=2" in last and "timestamps=true" in last


def test_kubectl_logs_follow_streams(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str) -> None:
    _bound_pod(cp, api, ns, "web")
    start = time.monotonic()
    proc = subprocess.Popen(["/usr/bin/kubectl", "--kubeconfig", str(cp.kubeconfig), "--cache-dir",
                             str(cp.root / "kcache-d"), "logs", "-f", "web", "-n", ns],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = b""
    while b"main line 5\n" not in first and time.monotonic() - start < 20:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready
        first += os.read(proc.stdout.fileno(), 65536)
    # the initial lines arrive before the agent has finished following (0.9 s later)
    assert proc.poll() is None
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert (first + out).decode().splitlines()[-3:] == ["main follow 0", "main follow 1", "main follow 2"]


def test_logs_container_choice_and_errors(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str) -> None:
    _bound_pod(cp, api, ns, "two", ("a", "b"))
    r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/two/log")
    assert r.status_code == 400
    assert r.json()["message"] == "a container name must be specified for pod two, choose one of: [a b]"
    r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/two/log?container=b&tailLines=1")
    assert (r.status_code, r.text, r.headers["Content-Type"]) == (200, "b line 5\n", "text/plain")
    r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/two/log?container=zz")
    assert r.status_code == 400 and "container zz is not valid for pod two" in r.json()["message"]
    r = cp.kubectl("logs", "two", "-c", "b", "-n", ns, "--tail=1", check=True)
    assert r.stdout == "b line 5\n"
    # not bound to a node yet
    _bound_pod(cp, api, ns, "pending", node="")
    r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/pending/log")
    assert r.status_code == 400 and r.json()["message"] == "pod pending does not have a host assigned"
    r = cp.kubectl("logs", "pending", "-n", ns)
    assert r.returncode == 1 and "pod pending does not have a host assigned" in r.stderr
    r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/nope/log")
    assert r.status_code == 404


def test_unreachable_node(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    node = "dead-node"
    api.post(f"{cp.url}/api/v1/nodes", json={"metadata": {"name": node}})
    r = api.patch(f"{cp.url}/api/v1/nodes/{node}/status",
                  json={"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                                   "daemonEndpoints": {"kubeletEndpoint": {"Port": dead}}}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    try:
        _bound_pod(cp, api, ns, "lost", node=node)
        r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/lost/log")
        assert r.status_code == 502
        assert f'node "{node}" agent at https://127.0.0.1:{dead} is unreachable' in r.json()["message"]
        r = cp.kubectl("logs", "lost", "-n", ns)
        assert r.returncode == 1 and "is unreachable" in r.stderr
        r = cp.kubectl("exec", "lost", "-n", ns, "--", "true")
        assert r.returncode == 1 and "is unreachable" in r.stderr
    finally:
        api.delete(f"{cp.url}/api/v1/nodes/{node}")


def test_nodes_and_anonymous_are_refused(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str) -> None:
    _bound_pod(cp, api, ns, "web")
    node_hdr = {"Impersonate-User": f"system:node:{NODE}"}
    r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/web/log", headers=node_hdr)
    assert r.status_code == 403 and 'cannot get resource "pods/log"' in r.json()["message"]
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods/web/exec?command=true&stdout=true", headers=node_hdr)
    assert r.status_code == 403 and 'cannot create resource "pods/exec"' in r.json()["message"]
    r = cp.kubectl("exec", "web", "-n", ns, f"--as=system:node:{NODE}", "--", "true")
    assert r.returncode == 1 and "Forbidden" in r.stderr
    r = cp.session(token=None).get(f"{cp.url}/api/v1/namespaces/{ns}/pods/web/log")
    assert r.status_code == 401
    r = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/web/exec?command=true")
    assert r.status_code == 400 and r.json()["message"] == "Upgrade request required"


def test_discovery_lists_pod_subresources(cp: ControlPlane, api: requests.Session) -> None:
    names = {r["name"] for r in api.get(f"{cp.url}/api/v1").json()["resources"]}
    assert {"pods/log", "pods/exec", "pods/attach", "pods/portforward"} <= names


# ---------------------------------------------------------------------------------------- exec

@pytest.mark.parametrize("version", [27, 29, 32, 33])
def test_kubectl_exec(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str, version: int) -> None:
    _bound_pod(cp, api, ns, "web")
    mark = len(agent.requests)
    r = cp.kubectl("exec", "web", "-n", ns, "--", "sh", "-c", "echo out; echo err >&2; exit 7", version=version)
    assert (r.stdout, r.returncode) == ("out\n", 7), r.stderr
    assert "err\n" in r.stderr and "command terminated with exit code 7" in r.stderr
    upgrades = [u for m, p, u in agent.requests[mark:] if p.startswith(f"/exec/{ns}/web/main?")]
    assert upgrades == (["websocket"] if version >= 30 else ["SPDY/3.1"])
    r = cp.kubectl("exec", "-i", "web", "-n", ns, "--", "sh", "-c", "tr a-z A-Z", input="hello stdin\n",
                   version=version)
    assert (r.stdout, r.returncode) == ("HELLO STDIN\n", 0), r.stderr


def test_kubectl_exec_spdy_fallback_and_attach(cp: ControlPlane, api: requests.Session, agent: FakeAgent,
                                               ns: str) -> None:
    _bound_pod(cp, api, ns, "web")
    env = {**os.environ, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
    r = subprocess.run(["/usr/lib/google-cloud-sdk/bin/kubectl.1.33", "--kubeconfig", str(cp.kubeconfig),
                        "--cache-dir", str(cp.root / "kcache-33"), "exec", "web", "-n", ns, "--", "echo", "spdy"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert (r.stdout, r.returncode) == ("spdy\n", 0), r.stderr
    for version in (27, 33):
        r = cp.kubectl("attach", "-i", "web", "-n", ns, input="typed\n", version=version)
        assert r.stdout == "attached\ntyped\n" and r.returncode == 0, r.stderr  # attach ends in Success, as from a kubelet


def test_exec_multi_container_needs_choice(cp: ControlPlane, api: requests.Session, agent: FakeAgent,
                                           ns: str) -> None:
    _bound_pod(cp, api, ns, "two", ("a", "b"))
    r = cp.kubectl("exec", "two", "-c", "b", "-n", ns, "--", "echo", "in-b", check=True)
    assert r.stdout == "in-b\n"
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods/two/exec?command=true",
                 headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                          "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
    assert r.status_code == 400 and "choose one of: [a b]" in r.json()["message"]


@pytest.mark.parametrize("version", [27, 33])
def test_kubectl_exec_tty_with_resize(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str,
                                      version: int) -> None:
    """-it through the proxy: kubectl on a pty, the pty resized mid-session (resize stream/channel)."""
    _bound_pod(cp, api, ns, "web")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen([f"/usr/lib/google-cloud-sdk/bin/kubectl.1.{version}", "--kubeconfig",
                             str(cp.kubeconfig), "--cache-dir", str(cp.root / f"kcache-{version}"), "exec", "-it",
                             "web", "-n", ns, "--", "sh", "-c", "stty size; read line; stty size; exit 4"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        assert b"40 100" in _read_until(master, b"40 100", 20)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        os.kill(proc.pid, signal.SIGWINCH)
        time.sleep(0.5)  # the resize races the line typed next
        os.write(master, b"go\r")
        assert b"30 120" in _read_until(master, b"exit code 4", 20)
        assert proc.wait(20) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


# ---------------------------------------------------------------------------------------- port-forward

def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize("version", [27, 30, 33])
def test_kubectl_port_forward(cp: ControlPlane, api: requests.Session, agent: FakeAgent, ns: str,
                              version: int) -> None:
    _bound_pod(cp, api, ns, "web")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    mark = len(agent.requests)
    proc = subprocess.Popen([f"/usr/lib/google-cloud-sdk/bin/kubectl.1.{version}", "--kubeconfig",
                             str(cp.kubeconfig), "--cache-dir", str(cp.root / f"kcache-{version}"),
                             "port-forward", "-n", ns, "pod/web", f"{local}:80"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert b"Forwarding from 127.0.0.1" in _read_until(proc.stdout.fileno(), b"\n", 20)
        for size in (5, 300_000):  # the second spans many SPDY windows and the splice's flow control
            payload = os.urandom(size).hex().encode()[:size]
            with socket.create_connection(("127.0.0.1", local), timeout=15) as conn:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := conn.recv(65536):
                    got += chunk
            assert got == payload.upper()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    upgrades = [u for m, p, u in agent.requests[mark:] if p.startswith(f"/portForward/{ns}/web")]
    assert upgrades == (["websocket"] if version >= 31 else ["SPDY/3.1"])


# ---------------------------------------------------------------------------------------- TLS to the agent

def test_agent_tls_is_verified_when_signed_by_the_cluster_ca(cp: ControlPlane, tmp_path: Any) -> None:
    from kubeletpy.controlplane import pki
    from kubeletpy.controlplane.nodeproxy import NodeProxy

    ca_cert, ca_key = pki.ensure_ca(cp.data / "pki")  # the running server's CA
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(ca_key, hashes.SHA256()))
    signed = tmp_path / "signed.crt", tmp_path / "signed.key"
    signed[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signed[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    own = _self_signed(tmp_path)
    # what the certificate controller issues to node n1 (agents' serving CA, CN=system:node:n1)
    from kubeletpy.agent import certificate as agentcert
    from kubeletpy.controllers.certificates import Signer

    n1_key, csr_pem = agentcert.make_request("n1", ["127.0.0.1"])
    signer = Signer(*pki.ensure_ca(cp.data / "pki", pki.KUBELET_SERVING_CA, pki.KUBELET_SERVING_CA_NAME))
    req = x509.load_pem_x509_csr(csr_pem)
    node_cert = tmp_path / "n1.crt", tmp_path / "n1.key"
    node_cert[0].write_bytes(signer.sign({"spec": {"usages": ["digital signature", "server auth"]}}, req))
    node_cert[1].write_bytes(n1_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))

    async def main() -> None:
        async def hang_up(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        ports = []
        servers = []
        for crt, kp in (signed, own, node_cert):
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(crt), str(kp))
            srv = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=ctx)
            servers.append(srv)
            ports.append(srv.sockets[0].getsockname()[1])
        agents_ca = (cp.data / "pki" / "ca.crt").read_bytes() + (cp.data / "pki" / "kubelet-serving-ca.crt").read_bytes()
        proxy = NodeProxy(None, None, agents_ca)  # type: ignore[arg-type]
        try:
            assert await proxy.tls("127.0.0.1", ports[0]) is proxy._strict
            assert await proxy.tls("127.0.0.1", ports[1]) is proxy._insecure
            # a certificate from the agents' serving CA passes only for the node it names
            assert await proxy.tls("127.0.0.1", ports[2], "n1") is proxy._strict
            with pytest.raises(APIError, match="presents a certificate for 'system:node:n1', not for node 'n2'"):
                await proxy.tls("127.0.0.1", ports[2], "n2")
        finally:
            for srv in servers:
                srv.close()

    asyncio.run(main())


def test_kubelet_client_certificate(cp: ControlPlane, api: requests.Session) -> None:
    """The API server's identity towards agents is a client certificate from the cluster CA
    (kubeadm's kube-apiserver-kubelet-client in system:masters), not a replayable token."""
    pki_dir = cp.data / "pki"
    crt = x509.load_pem_x509_certificate((pki_dir / "apiserver-kubelet-client.crt").read_bytes())
    crt.verify_directly_issued_by(x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes()))
    assert crt.subject.rfc4514_string() == "CN=kube-apiserver-kubelet-client,O=system:masters"
    eku = crt.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (pki_dir / "apiserver-kubelet-client.key").stat().st_mode & 0o777 == 0o600
    assert not (cp.data / "kubelet-client-token").exists()
    tokens = json.loads((cp.data / "tokens.json").read_text())["tokens"]
    assert not [t for t in tokens if t["user"] == "kube-apiserver-kubelet-client"]
