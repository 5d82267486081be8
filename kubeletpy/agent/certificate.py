"""The agent's serving certificate, from the cluster (the kubelet's `serverTLSBootstrap`
and `--rotate-server-certificates`).

Why: the API server reaches the agent's :10250 for logs, exec and port-forward. A
self-signed certificate there cannot be verified, so anything answering on the node's
address would be trusted. Instead the agent asks the cluster for a certificate: it makes
a key, posts a CertificateSigningRequest for signer `kubernetes.io/kubelet-serving`
(subject `system:node:<name>` / `system:nodes`, its name and address as SANs), waits for
approval and signing (kubeletpy/controllers/certificates.py approves this shape of request
automatically; otherwise `kubectl certificate approve`), and serves the result. Until then,
and whenever the API server cannot issue one, it keeps serving its self-signed certificate.
The certificate is renewed, through a new request, when 70-90 % of its lifetime has passed.

Files (like the kubelet's /var/lib/kubelet/pki): `kubelet-server-current.pem` holds the
certificate and its key (0600), written atomically.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cri.fsutil import atomic_write_bytes
from kubeletpy.apiclient import CSRS

if TYPE_CHECKING:
    from kubeletpy.agent.agent import Agent

log = logging.getLogger("kubeletpy.agent.certificate")

CURRENT = "kubelet-server-current.pem"
SIGNER = "kubernetes.io/kubelet-serving"
RETRY = 300.0  # after a refusal or an API server without CSRs


class CSRRefused(Exception):
    pass


def current_path(root_dir: Path) -> Path:
    return root_dir / "pki" / CURRENT


def load_current(path: Path) -> x509.Certificate | None:
    """The issued certificate in use, if there is one that is valid now."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    now = dt.datetime.now(dt.UTC)
    return cert if cert.not_valid_before_utc <= now < cert.not_valid_after_utc else None


def names_match(cert: x509.Certificate, node: str, ips: list[str]) -> bool:
    """Whether the certificate still names this node and its addresses (a node renamed or
    moved to another address needs a new one at once, not at renewal time)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    want_ips = set()
    for ip in ips:
        with contextlib.suppress(ValueError):
            want_ips.add(str(ipaddress.ip_address(ip)))
    return node in san.get_values_for_type(x509.DNSName) and want_ips <= have_ips


def renewal_time(cert: x509.Certificate, rng: random.Random | None = None) -> dt.datetime:
    """Somewhere in 70-90 % of the lifetime (jittered so a fleet does not renew at once)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * (rng or random).uniform(0.7, 0.9)


def make_request(node: str, ips: list[str]) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(node)]
    for ip in dict.fromkeys(ips):
        with contextlib.suppress(ValueError):
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")]))
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM)


def _refusal(csr: dict[str, Any]) -> str | None:
    for c in (csr.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Denied", "Failed") and c.get("status", "True") == "True":
            return f"{c['type']}: {c.get('reason', '')} {c.get('message', '')}".strip()
    return None


async def request_certificate(agent: Agent, poll: float = 0.5) -> tuple[bytes, bytes]:
    """Post a CSR and wait until it is issued; (certificate PEM, key PEM)."""
    key, csr_pem = make_request(agent.cfg.node_name, [agent.node_ip])
    obj = {"metadata": {"generateName": "csr-"},
           "spec": {"request": base64.b64encode(csr_pem).decode(), "signerName": SIGNER,
                    "usages": ["digital signature", "server auth"]}}
    created = await agent.client.create(CSRS, obj, field_manager="kubelet")
    name = created["metadata"]["name"]
    log.info("requested a serving certificate: CertificateSigningRequest %s (pending until approved, e.g. "
             "`kubectl certificate approve %s`)", name, name)
    delay, waited, warned = poll, 0.0, False
    while True:
        if waited > 60 and not warned:
            warned = True
            log.warning("CertificateSigningRequest %s still pending after a minute: approve it with `kubectl "
                        "certificate approve %s` (until then the agent serves its current certificate)", name, name)
        csr = await agent.client.get(CSRS, name)
        why = _refusal(csr)
        if why:
            raise CSRRefused(f"CertificateSigningRequest {name}: {why}")
        issued = (csr.get("status") or {}).get("certificate")
        if issued:
            cert_pem = base64.b64decode(issued)
            cert = x509.load_pem_x509_certificate(cert_pem)
            if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
                raise CSRRefused(f"CertificateSigningRequest {name}: issued for another key")
            key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            return cert_pem, key_pem
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 1.5, 10.0)


async def run(agent: Agent) -> None:
    """Keep a cluster-issued serving certificate in place: request one if there is none, renew it
    when due, and hand each new one to the agent's HTTPS server."""
    path = current_path(agent.cfg.root_dir)
    while True:
        cert = await asyncio.to_thread(load_current, path)
        if cert is not None and not names_match(cert, agent.cfg.node_name, [agent.node_ip]):
            log.info("the serving certificate does not name %s / %s; requesting a new one", agent.cfg.node_name,
                     agent.node_ip)
            cert = None
        if cert is not None:
            wait = (renewal_time(cert) - dt.datetime.now(dt.UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, 3600.0))  # wake hourly: a clock jump must not strand us
                continue
        try:
            cert_pem, key_pem = await request_certificate(agent)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - refused, no CSR API, API server away: retry later
            log.warning("no serving certificate from the cluster (%s); serving the self-signed one, retrying in "
                        "%.0fs", e, RETRY)
            await asyncio.sleep(RETRY)
            continue
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(atomic_write_bytes, path, cert_pem + key_pem, 0o600)
        server = getattr(agent, "http", None)
        if server is not None:
            server.use_certificate(path)
        log.info("serving the certificate issued by the cluster (valid until %s)",
                 x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.isoformat())
