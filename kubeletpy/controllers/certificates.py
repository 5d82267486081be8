"""CertificateSigningRequests: the approver and the signer of kube-controller-manager.

Why: a node agent serves HTTPS on :10250 (logs, exec, port-forward). With a self-signed
certificate the API server cannot tell the real agent from an impostor on the node's
address; with a certificate signed by a CA it trusts it can, and does (nodeproxy.py). The
agent gets one the way the kubelet does with `serverTLSBootstrap`: it posts a
`certificates.k8s.io/v1` CertificateSigningRequest for signer `kubernetes.io/kubelet-serving`,
someone approves it, and the signer issues the certificate into `status.certificate`.

* **Approver** (like the community kubelet-csr-approver; kube-controller-manager leaves
  serving CSRs to a human): a kubelet-serving CSR is approved when it was requested by the
  node it names (`system:node:<name>` in group `system:nodes`), asks only for the usages
  that signer allows, and its subject alternative names are that node's name and
  InternalIP/ExternalIP addresses it reports that no other Node claims. Anything else stays
  pending for `kubectl certificate approve|deny`.
* **Signer**: every approved, not denied, not yet issued CSR for a signer it knows
  (`kubernetes.io/kubelet-serving`) is checked against that signer's rules (subject
  `O=system:nodes`, `CN=system:node:...`, usages within digital signature / key
  encipherment / server auth, only DNS and IP SANs) and signed with the configured CA (in
  `kubeletpy control-plane`: the agents' serving CA, which nothing but the API server's hop
  to agents trusts) for `spec.expirationSeconds` (at most `--cluster-signing-duration`, one
  year by default); a CSR that breaks the rules gets a `Failed` condition with reason
  `SignerValidationFailure`.
* **Cleaner** (kube-controller-manager's csrcleaner): decided CSRs are deleted an hour after
  the decision, pending ones after a day, so a fleet renewing certificates leaves no pile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeletpy.apiclient import CSRS, NODES, ApiError, Client, Informer, parse_time

log = logging.getLogger("kubeletpy.controllers.certificates")

KUBELET_SERVING = "kubernetes.io/kubelet-serving"
SERVING_USAGES = frozenset({"digital signature", "key encipherment", "server auth"})
DEFAULT_DURATION = 365 * 24 * 3600.0
DECIDED_TTL = 3600.0           # approved/issued, denied or failed: kept this long
PENDING_TTL = 24 * 3600.0      # never decided: kept this long after creation
CLEAN_PERIOD = 600.0


def conditions(csr: dict[str, Any]) -> set[str]:
    return {c.get("type", "") for c in (csr.get("status") or {}).get("conditions") or []
            if c.get("status", "True") == "True"}


def expired(csr: dict[str, Any], now: float) -> bool:
    """The csrcleaner's rule: an hour after the last decision, a day after creation if undecided."""
    decided = [parse_time(c.get("lastUpdateTime") or c.get("lastTransitionTime") or "")
               for c in (csr.get("status") or {}).get("conditions") or []
               if c.get("type") in ("Approved", "Denied", "Failed")]
    decided = [t for t in decided if t is not None]
    if decided:
        return now - max(decided) > DECIDED_TTL
    created = parse_time(csr["metadata"].get("creationTimestamp") or "")
    return created is not None and now - created > PENDING_TTL


def parse_request(csr: dict[str, Any]) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(base64.b64decode((csr.get("spec") or {}).get("request") or ""))


def _names(req: x509.CertificateSigningRequest) -> tuple[list[str], list[str], int]:
    """(DNS names, IP addresses, count of other SANs: email, URI, ...)."""
    try:
        san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], 0
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    return dns, ips, len(list(san)) - len(dns) - len(ips)


def serving_problems(csr: dict[str, Any], req: x509.CertificateSigningRequest) -> list[str]:
    """What breaks the kubernetes.io/kubelet-serving signer's rules (empty: nothing)."""
    problems = []
    orgs = [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    cns = [a.value for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if orgs != ["system:nodes"]:
        problems.append(f"subject organization must be exactly [system:nodes], not {orgs}")
    if len(cns) != 1 or not str(cns[0]).startswith("system:node:") or cns[0] == "system:node:":
        problems.append(f"subject common name must be system:node:<name>, not {cns}")
    usages = set((csr.get("spec") or {}).get("usages") or [])
    if not usages <= SERVING_USAGES or "server auth" not in usages:
        problems.append(f"usages must include server auth and be within {sorted(SERVING_USAGES)}: "
                        f"{sorted(usages)}")
    dns, ips, other = _names(req)
    if other:
        problems.append("only DNS and IP subject alternative names are allowed")
    if not dns and not ips:
        problems.append("at least one DNS or IP subject alternative name is required")
    return problems


def approval_problems(csr: dict[str, Any], req: x509.CertificateSigningRequest, node: dict[str, Any] | None,
                      others: Iterable[dict[str, Any]] = ()) -> list[str]:
    """Why a kubelet-serving CSR is not safe to approve automatically (empty: approve).

    A node writes its own status, so what it reports is only trusted as far as it cannot hurt
    anyone else: the one DNS name allowed is the node's name, and IPs must be among its
    InternalIP/ExternalIP addresses and not claimed by any other Node. (The certificate is
    signed by the agents' serving CA, which only the API server's hop to agents trusts, so
    it cannot pose as the API server whatever it names.)"""
    problems = serving_problems(csr, req)
    if problems:
        return problems
    spec = csr.get("spec") or {}
    cn = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    name = str(cn).removeprefix("system:node:")
    if spec.get("username") != cn or "system:nodes" not in (spec.get("groups") or []):
        return [f"requested by {spec.get('username')!r}, not by node {name!r} itself"]
    if node is None:
        return [f"node {name!r} is not registered"]
    own_ips = _node_ips(node)
    taken = {ip for o in others if o["metadata"]["name"] != name for ip in _node_ips(o)}
    dns, ips, _ = _names(req)
    out = [f"DNS name {d!r} is not node {name}'s name" for d in dns if d != name]
    out += [f"IP address {i} is not one of node {name}'s addresses" for i in ips if i not in own_ips]
    out += [f"IP address {i} is also claimed by another node" for i in ips if i in own_ips and i in taken]
    return out


def _node_ips(node: dict[str, Any]) -> set[str]:
    out = set()
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") in ("InternalIP", "ExternalIP"):
            with contextlib.suppress(ValueError):
                out.add(str(ipaddress.ip_address(a.get("address", ""))))
    return out


@dataclass
class Signer:
    ca_cert: x509.Certificate
    ca_key: Any
    max_duration: float = DEFAULT_DURATION

    @classmethod
    def from_files(cls, cert: Path, key: Path, max_duration: float = DEFAULT_DURATION) -> Signer:
        return cls(x509.load_pem_x509_certificate(cert.read_bytes()),
                   serialization.load_pem_private_key(key.read_bytes(), password=None), max_duration)

    def sign(self, csr: dict[str, Any], req: x509.CertificateSigningRequest,
             now: datetime.datetime | None = None) -> bytes:
        now = now or datetime.datetime.now(datetime.UTC)
        asked = (csr.get("spec") or {}).get("expirationSeconds")
        duration = min(float(asked), self.max_duration) if asked else self.max_duration
        usages = set((csr.get("spec") or {}).get("usages") or [])
        dns, ips, _ = _names(req)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        # backdated 5 minutes for clock skew, as kube-controller-manager's signer does
        builder = (x509.CertificateBuilder().subject_name(req.subject).issuer_name(self.ca_cert.subject)
                   .public_key(req.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(min(now + datetime.timedelta(seconds=duration), self.ca_cert.not_valid_after_utc))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature="digital signature" in usages, content_commitment=False,
                       key_encipherment="key encipherment" in usages, data_encipherment=False,
                       key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
                       decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if not isinstance(self.ca_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise ValueError("the cluster signing key must be an EC or RSA key")
        return builder.sign(self.ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _condition(ctype: str, reason: str, message: str) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": ctype, "status": "True", "reason": reason, "message": message, "lastUpdateTime": now,
            "lastTransitionTime": now}


class CertificateController:
    """Approves node serving CSRs that are safe to approve, and signs approved ones."""

    def __init__(self, client: Client, signer: Signer | None, auto_approve: bool = True) -> None:
        self.client = client
        self.signer = signer
        self.auto_approve = auto_approve
        self.csrs = Informer(client, CSRS)
        self.nodes = Informer(client, NODES)
        self._work: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self.csrs.add_handlers(self._enqueue, lambda _old, new: self._enqueue(new), None)
        # a node reporting its addresses late can make a waiting CSR approvable
        self.nodes.add_handlers(self._node_changed, lambda _old, new: self._node_changed(new), None)

    def _enqueue(self, csr: dict[str, Any]) -> None:
        name = csr["metadata"]["name"]
        if name not in self._queued:
            self._queued.add(name)
            self._work.put_nowait(name)

    def _node_changed(self, node: dict[str, Any]) -> None:
        for csr in self.csrs.items():
            if not conditions(csr) and (csr.get("spec") or {}).get("username") == \
                    f"system:node:{node['metadata']['name']}":
                self._enqueue(csr)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.csrs.run(), name="csr-informer"),
                 asyncio.create_task(self.nodes.run(), name="csr-node-informer"),
                 asyncio.create_task(self._clean_loop(), name="csr-cleaner")]
        try:
            await self.csrs.wait_synced()
            await self.nodes.wait_synced()
            while True:
                name = await self._work.get()
                self._queued.discard(name)
                csr = self.csrs.get(name)
                if csr is None:
                    continue
                try:
                    await self.sync(csr)
                except ApiError as e:
                    if e.code != 409:  # a conflict means a newer version is on its way: handled then
                        log.warning("csr %s: %s", name, e)
                except Exception:  # noqa: BLE001 - one bad request must not stop the others
                    log.exception("csr %s: cannot be handled; left as it is", name)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _clean_loop(self) -> None:
        await self.csrs.wait_synced()
        while True:
            await self.clean()
            await asyncio.sleep(CLEAN_PERIOD)

    async def clean(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        gone = []
        for csr in self.csrs.items():
            if expired(csr, now):
                name = csr["metadata"]["name"]
                try:
                    await self.client.delete(CSRS, name)
                    gone.append(name)
                except ApiError as e:
                    if e.code != 404:
                        log.warning("csr cleaner: %s: %s", name, e)
        if gone:
            log.info("csr cleaner removed %d old CertificateSigningRequests", len(gone))
        return gone

    async def sync(self, csr: dict[str, Any]) -> None:
        spec, status = csr.get("spec") or {}, csr.get("status") or {}
        if spec.get("signerName") != KUBELET_SERVING:
            return
        conds = conditions(csr)
        name = csr["metadata"]["name"]
        try:
            req = parse_request(csr)
            _names(req)
        except Exception:  # noqa: BLE001 - the API server validated it; nothing sensible to do with garbage
            log.warning("csr %s: unreadable request; left pending", name)
            return
        if not conds & {"Approved", "Denied"} and self.auto_approve:
            cn = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            node = self.nodes.get(str(cn[0].value).removeprefix("system:node:")) if cn else None
            problems = approval_problems(csr, req, node, self.nodes.items())
            if problems:
                log.info("csr %s left for manual approval: %s", name, "; ".join(problems))
                return
            csr = {**csr, "status": {**status, "conditions": [*(status.get("conditions") or []), _condition(
                "Approved", "AutoApproved", "Auto approving kubelet serving certificate after SAN validation.")]}}
            csr = await self.client.update(CSRS, csr, subresource="approval")
            log.info("csr %s approved (kubelet serving certificate for %s)", name, spec.get("username"))
            conds = conditions(csr)
            status = csr.get("status") or {}
        if self.signer is None or "Approved" not in conds or conds & {"Denied", "Failed"} or status.get("certificate"):
            return
        problems = serving_problems(csr, req)
        if problems:
            csr["status"] = {**status, "conditions": [*(status.get("conditions") or []), _condition(
                "Failed", "SignerValidationFailure", "; ".join(problems))]}
            await self.client.update(CSRS, csr, subresource="status")
            log.warning("csr %s failed the %s signer's rules: %s", name, KUBELET_SERVING, "; ".join(problems))
            return
        pem = self.signer.sign(csr, req)
        csr["status"] = {**status, "certificate": base64.b64encode(pem).decode()}
        await self.client.update(CSRS, csr, subresource="status")
        log.info("csr %s signed", name)
