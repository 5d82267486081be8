"""The agent's HTTPS server (the kubelet's :10250): logs, exec, attach, port-forward.

URLs (the kubelet's, so an API server proxy maps pods/<name>/{log,exec,attach,portforward}
onto them one to one):

    GET  /healthz                                   no authentication
    GET  /pods                                      PodList of the pods this agent runs
    GET  /containerLogs/<ns>/<pod>/<container>      ?follow&tailLines&sinceSeconds&timestamps&previous&limitBytes
    GET|POST /exec/<ns>/<pod>/<container>?command=..&stdin&stdout&stderr&tty     (SPDY or websocket upgrade)
    GET|POST /attach/<ns>/<pod>/<container>?stdin&stdout&stderr&tty
    GET|POST /portForward/<ns>/<pod>?port=..        (`ports=` accepted too)

Authentication: the API server presents its kubelet client certificate (from the cluster CA,
CN kube-apiserver-kubelet-client, O system:masters), verified by TLS against the CA the agent
trusts for the API server. Anyone else sends `Authorization: Bearer <token>`, accepted when it
is listed in --authorized-tokens-file, or when the API server, asked with that token, lets it
list Secrets in kube-system -- i.e. the admin credential (the answer is cached for a minute).

Exec/attach/port-forward: the agent asks the runtime (CRI Exec/Attach/PortForward) for a
one-time streaming URL and splices the client's upgraded connection to it byte for byte --
the kubelet's "proxy" streaming mode -- so every protocol `cri.streaming` speaks (SPDY/3.1,
websocket v1..v5, port-forward tunnels) passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from cri.streaming.server import HijackedResponse
from kubeletpy.agent import labels as L
from kubeletpy.agent.cri import errmsg, pb
from kubeletpy.apiclient import SECRETS, ApiError, Client, ClientConfig, TransportError

if TYPE_CHECKING:
    from kubeletpy.agent.agent import Agent

log = logging.getLogger("kubeletpy.agent.server")
AUTH_TTL = 60.0


# x509 identities the agent serves without asking the API server: the API server's own
# (CN kube-apiserver-kubelet-client, O system:masters, as kubeadm issues it)
TRUSTED_CLIENTS = {("kube-apiserver-kubelet-client", "system:masters")}


def _client_cert_user(request: web.Request) -> tuple[str, str] | None:
    """(CN, first O) of a client certificate the TLS layer verified against the cluster CA."""
    transport = request.transport
    peer = transport.get_extra_info("peercert") if transport is not None else None
    if not peer:
        return None
    subject = [x[0] for x in peer.get("subject", ())]
    cn = next((v for k, v in subject if k == "commonName"), "")
    orgs = [v for k, v in subject if k == "organizationName"]
    return (cn, "system:masters") if "system:masters" in orgs else (cn, orgs[0] if orgs else "")


def ensure_cert(pki: Path, node: str, ips: list[str]) -> tuple[Path, Path]:
    """A self-signed serving certificate for the node name and addresses (kept across restarts)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    crt, key_path = pki / "kubelet.crt", pki / "kubelet.key"
    if crt.exists() and key_path.exists():
        return crt, key_path
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{node}@{int(time.time())}")])
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(node), x509.DNSName("localhost")]
    for ip in {*ips, "127.0.0.1"}:
        with contextlib.suppress(ValueError):
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def parse_cri_line(line: bytes) -> tuple[str, str, bool, bytes] | None:
    """CRI log line `<RFC3339Nano> <stream> <P|F> <content>` -> (ts, stream, full, content)."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = parts[0].decode(errors="replace"), parts[1].decode(errors="replace"), parts[2]
    content = parts[3] if len(parts) > 3 else b""
    return ts, stream, tag != b"P", content


def _ts_seconds(ts: str) -> float:
    try:
        base, _, frac = ts.rstrip("Z").partition(".")
        t = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
        return t + (float("0." + frac[:9]) if frac else 0.0)
    except ValueError:
        return 0.0


def render_log(lines: list[bytes], *, timestamps: bool, since: float | None, tail: int | None) -> list[bytes]:
    """Whole log lines (partial P chunks joined) from CRI-format lines, filtered."""
    out: list[tuple[str, bytes]] = []
    partial: dict[str, tuple[str, bytes]] = {}
    for raw in lines:
        parsed = parse_cri_line(raw)
        if parsed is None:
            continue
        ts, stream, full, content = parsed
        first_ts, acc = partial.pop(stream, (ts, b""))
        acc += content
        if not full:
            partial[stream] = (first_ts, acc)
            continue
        if since is not None and _ts_seconds(first_ts) < since:
            continue
        out.append((first_ts, acc + b"\n"))
    if tail is not None:
        out = out[-tail:] if tail > 0 else []
    return [(ts.encode() + b" " + c) if timestamps else c for ts, c in out]


class _Splice(asyncio.Protocol):
    """The client's socket after the upgrade: bytes go to the runtime's streaming server."""

    def __init__(self, upstream: asyncio.StreamWriter) -> None:
        self.upstream = upstream

    def data_received(self, data: bytes) -> None:
        self.upstream.write(data)

    def eof_received(self) -> bool:
        with contextlib.suppress(Exception):
            self.upstream.write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.upstream.close()


_HOP_HEADERS = ("connection", "upgrade", "x-stream-protocol-version", "sec-websocket-key", "sec-websocket-version",
                "sec-websocket-protocol", "sec-websocket-extensions", "content-length")


async def proxy_upgrade(request: web.Request, url: str, query: str = "") -> web.StreamResponse:
    """Forward the upgrade request to `url` and, once it answers, splice the two sockets."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    query = parts.query or query
    path = parts.path + (f"?{query}" if query else "")
    head = [f"{request.method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    for k, v in request.headers.items():
        if k.lower() in _HOP_HEADERS:
            head.append(f"{k}: {v}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    response_head = await reader.readuntil(b"\r\n\r\n")
    status = int(response_head.split(b" ", 2)[1])
    transport = request.transport
    if transport is None or transport.is_closing():
        writer.close()
        return web.Response(status=400, text="client went away")
    if status != 101:
        body = b""
        with contextlib.suppress(Exception):
            body = await asyncio.wait_for(reader.read(65536), 2)
        writer.close()
        hdrs = {}
        for line in response_head.decode("latin-1").split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.lower() in ("content-type", "x-accepted-stream-protocol-versions"):
                hdrs[k] = v.strip()
        return web.Response(status=status, body=body, headers=hdrs)
    transport.write(response_head)
    transport.set_protocol(_Splice(writer))
    with contextlib.suppress(RuntimeError, AttributeError):
        if not transport.is_reading():  # type: ignore[attr-defined]
            transport.resume_reading()
    request.protocol.close()

    async def pump() -> None:
        try:
            while data := await reader.read(65536):
                transport.write(data)
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                transport.close()
            writer.close()

    # The handler lives as long as the splice: aiohttp closes the socket when it returns.
    await pump()
    return HijackedResponse()


class AgentServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.runner: web.AppRunner | None = None
        self.tls: ssl.SSLContext | None = None
        self._auth_cache: dict[str, tuple[float, bool]] = {}
        self.static_tokens: set[str] = set()
        tf = agent.cfg.authorized_tokens_file
        if tf:
            self.static_tokens = {t.strip() for t in Path(tf).read_text().splitlines() if t.strip()}

    async def start(self) -> int:
        cfg = self.agent.cfg
        from kubeletpy.agent import certificate

        issued = certificate.current_path(cfg.root_dir)
        if cfg.tls_cert and cfg.tls_key:
            crt, key = cfg.tls_cert, cfg.tls_key
        elif await asyncio.to_thread(certificate.load_current, issued) is not None:
            crt = key = issued  # the cluster-issued one from an earlier run (certificate.py)
        else:
            crt, key = await asyncio.to_thread(ensure_cert, cfg.root_dir / "pki", cfg.node_name,
                                               [self.agent.node_ip])
        tls = self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(str(crt), str(key))
        tls.set_alpn_protocols(["http/1.1"])
        ca = self.agent.client.config.ca_pem
        if ca:  # x509 client auth (the API server's kubelet client certificate); tokens still work
            tls.verify_mode = ssl.CERT_OPTIONAL
            tls.load_verify_locations(cadata=ca.decode())
        else:
            log.warning("no cluster CA in the agent's credentials: the API server's client certificate cannot be "
                        "verified, so only bearer tokens are accepted on :%d", cfg.port)
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/pods", self._pods)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
        for verb in ("exec", "attach"):
            for method in ("GET", "POST"):
                app.router.add_route(method, f"/{verb}/{{ns}}/{{pod}}/{{container}}", self._stream)
                app.router.add_route(method, f"/{verb}/{{ns}}/{{pod}}", self._stream)
        for method in ("GET", "POST"):
            app.router.add_route(method, "/portForward/{ns}/{pod}", self._portforward)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.address, max(cfg.port, 0), ssl_context=tls, reuse_address=True)
        await site.start()
        sockets = getattr(getattr(site, "_server", None), "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else cfg.port
        log.info("serving https on %s:%d", cfg.address, port)
        return int(port)

    def use_certificate(self, pem: Path) -> None:
        """Serve a new certificate (cert and key in one file) from the next handshake on;
        connections already open keep theirs."""
        if self.tls is not None:
            self.tls.load_cert_chain(str(pem))

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ auth

    async def _allowed(self, token: str) -> bool:
        if token in self.static_tokens:
            return True
        h = hashlib.sha256(token.encode()).hexdigest()
        hit = self._auth_cache.get(h)
        if hit and time.monotonic() - hit[0] < AUTH_TTL:
            return hit[1]
        base = self.agent.client.config
        probe = Client(ClientConfig(server=base.server, token=token, ca_pem=base.ca_pem, insecure=base.insecure),
                       user_agent="kubelet-authn")
        try:
            await probe.request("GET", SECRETS.path("kube-system"), params={"limit": 1})
            ok = True
        except (ApiError, TransportError):
            ok = False
        finally:
            await probe.close()
        self._auth_cache[h] = (time.monotonic(), ok)
        return ok

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        if _client_cert_user(request) in TRUSTED_CLIENTS:
            return await handler(request)
        authz = request.headers.get("Authorization", "")
        token = authz[7:].strip() if authz.lower().startswith("bearer ") else ""
        if not token:
            return web.Response(status=401, text="Unauthorized")
        if not await self._allowed(token):
            return web.Response(status=403, text="Forbidden")
        return await handler(request)

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _pods(self, request: web.Request) -> web.Response:
        items = [w.pod for w in self.agent.workers.values() if not w.done]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def _pod(self, ns: str, name: str) -> Any:
        for w in self.agent.workers.values():
            md = w.pod.get("metadata") or {}
            if md.get("namespace") == ns and md.get("name") == name and not w.done:
                return w
        raise web.HTTPNotFound(text=f'pod "{name}" not found in namespace "{ns}"')

    def _containers(self, uid: str, name: str) -> list[Any]:
        cs = [c for c in self.agent.pleg.snapshot.containers.get(uid, []) if c.labels.get(L.CONTAINER_NAME) == name]
        cs.sort(key=lambda c: (int(c.annotations.get(L.RESTART_COUNT, "0") or 0), c.created_at), reverse=True)
        return cs

    def _default_container(self, w: Any, name: str) -> str:
        if name:
            return name
        cs = (w.pod.get("spec") or {}).get("containers") or []
        return cs[0].get("name", "") if cs else ""

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        w = self._pod(request.match_info["ns"], request.match_info["pod"])
        name = request.match_info["container"]
        cs = self._containers(w.uid, name)
        previous = q.get("previous", "").lower() in ("1", "true")
        idx = 1 if previous else 0
        if len(cs) <= idx:
            what = "previous terminated container" if previous else "container"
            raise web.HTTPBadRequest(text=f'{what} "{name}" in pod "{request.match_info["pod"]}" not found')
        cid = cs[idx].id
        try:
            st = await self.agent.cri.container_status(cid)
        except Exception as e:  # noqa: BLE001
            raise web.HTTPInternalServerError(text=errmsg(e)) from None
        path = Path(st.log_path)
        since = time.time() - float(q["sinceSeconds"]) if q.get("sinceSeconds") else None
        if q.get("sinceTime"):
            since = _ts_seconds(q["sinceTime"])
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        timestamps = q.get("timestamps", "").lower() in ("1", "true")
        follow = q.get("follow", "").lower() in ("1", "true") and not previous
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        try:
            data = path.read_bytes() if path.exists() else b""
        except OSError:
            data = b""
        complete, _, rest = data.rpartition(b"\n")
        lines = [ln + b"\n" for ln in complete.split(b"\n")] if complete else []
        pos = len(complete) + 1 if complete else 0
        for chunk in render_log(lines, timestamps=timestamps, since=since, tail=tail):
            if limit is not None and sent + len(chunk) > limit:
                await resp.write(chunk[: limit - sent])
                return resp
            await resp.write(chunk)
            sent += len(chunk)
        while follow:
            await asyncio.sleep(0.2)
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    more = f.read()
            except OSError:
                more = b""
            if more:
                complete, sep, _ = more.rpartition(b"\n")
                if sep:
                    pos += len(complete) + 1
                    for chunk in render_log([ln + b"\n" for ln in complete.split(b"\n")], timestamps=timestamps,
                                            since=None, tail=None):
                        await resp.write(chunk)
                        sent += len(chunk)
                continue
            snap = self.agent.pleg.snapshot.by_id.get(cid)
            if snap is None or snap.state != pb.CONTAINER_RUNNING:
                break
        await resp.write_eof()
        return resp

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        verb = request.path.split("/", 2)[1]
        w = self._pod(request.match_info["ns"], request.match_info["pod"])
        name = self._default_container(w, request.match_info.get("container", q.get("container", "")))
        running = [c for c in self._containers(w.uid, name) if c.state == pb.CONTAINER_RUNNING]
        if not running:
            raise web.HTTPBadRequest(text=f'container "{name}" in pod "{request.match_info["pod"]}" is not running')
        flag = {k: q.get(k, "").lower() in ("1", "true") for k in ("stdin", "stdout", "stderr", "tty")}
        if "stdout" not in q and "output" not in q:
            flag["stdout"] = True
        if flag["tty"]:
            flag["stderr"] = False
        try:
            if verb == "exec":
                url = await self.agent.cri.exec_url(running[0].id, q.getall("command", []), flag["stdin"],
                                                    flag["stdout"], flag["stderr"], flag["tty"])
            else:
                url = await self.agent.cri.attach_url(running[0].id, flag["stdin"], flag["stdout"], flag["stderr"],
                                                      flag["tty"])
        except Exception as e:  # noqa: BLE001
            raise web.HTTPBadRequest(text=errmsg(e)) from None
        return await proxy_upgrade(request, url)

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        w = self._pod(request.match_info["ns"], request.match_info["pod"])
        sbs = [s for s in self.agent.pleg.snapshot.sandboxes.get(w.uid, []) if s.state == pb.SANDBOX_READY]
        if not sbs:
            raise web.HTTPBadRequest(text="pod sandbox is not ready")
        # `port` is the kubelet's name (the API server turns pods/portforward?ports= into it);
        # `ports` is accepted too. Websocket port-forward reads them from the query.
        ports = [int(p) for key in ("port", "ports") for v in request.query.getall(key, []) for p in v.split(",")
                 if p.strip().isdigit()]
        try:
            url = await self.agent.cri.port_forward_url(sbs[0].id, ports)
        except Exception as e:  # noqa: BLE001
            raise web.HTTPBadRequest(text=errmsg(e)) from None
        return await proxy_upgrade(request, url, urlencode([("port", p) for p in ports]))


