"""The cluster CA and the API server's serving certificate, made with `cryptography`.

First start makes a CA (ECDSA P-256, 10 years) and a serving certificate signed by it;
later starts reuse both, and re-issue only the serving certificate when it is close to
expiry or is missing a name or address the server now needs (a new host IP, a new
`--listen` address). ECDSA keeps the TLS handshake cheap, which matters for kubectl,
which opens a new connection per invocation.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cri.fsutil import atomic_write_bytes

SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local", "localhost")
SERVICE_IP = "10.96.0.1"  # first address of the default service CIDR


def host_ips() -> list[str]:
    """Every address on this host's interfaces (`ip -j addr`), plus loopback."""
    ips = {"127.0.0.1", "::1"}
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5).stdout
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                if a.get("local") and a.get("scope") != "link":
                    ips.add(a["local"])
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return sorted(ips)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    atomic_write_bytes(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), mode=0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


KUBELET_SERVING_CA = "kubelet-serving-ca"
KUBELET_SERVING_CA_NAME = "kubeletpy-kubelet-serving-ca"


def ensure_ca(pki: Path, stem: str = "ca", common_name: str = "kubeletpy-ca") -> tuple[
        x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The cluster CA (`ca`), or another self-signed CA kept beside it: `kubelet-serving-ca`
    signs only agents' serving certificates, so a certificate a node obtains through a CSR is
    trusted for reaching agents and nothing else (clients of the API server trust `ca` only)."""
    crt, keyp = pki / f"{stem}.crt", pki / f"{stem}.key"
    if crt.exists() and keyp.exists():
        return x509.load_pem_x509_certificate(crt.read_bytes()), _load_key(keyp)
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(keyp, key)
    atomic_write_bytes(crt, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert, key


def _sans(extra_hosts: list[str]) -> tuple[set[str], set[str]]:
    dns = set(SERVICE_NAMES)
    hn = socket.gethostname()
    dns.add(hn)
    fq = socket.getfqdn()
    if fq and fq != "localhost":
        dns.add(fq)
    ips = set(host_ips()) | {SERVICE_IP}
    for h in extra_hosts:
        if not h or h in ("0.0.0.0", "::"):
            continue
        try:
            ips.add(str(ipaddress.ip_address(h)))
        except ValueError:
            dns.add(h)
    return dns, ips


def ensure_serving_cert(pki: Path, extra_hosts: list[str]) -> tuple[Path, Path]:
    """Return (cert, key) paths, issuing a new serving certificate when needed."""
    ca_cert, ca_key = ensure_ca(pki)
    crt, keyp = pki / "apiserver.crt", pki / "apiserver.key"
    dns, ips = _sans(extra_hosts)
    if crt.exists() and keyp.exists():
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have_dns = set(san.get_values_for_type(x509.DNSName))
            have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
        except x509.ExtensionNotFound:
            have_dns, have_ips = set(), set()
        fresh = cert.not_valid_after_utc - _now() > datetime.timedelta(days=30)
        if fresh and dns <= have_dns and ips <= have_ips and cert.issuer == ca_cert.subject:
            return crt, keyp
    sans = [x509.DNSName(d) for d in sorted(dns)] + [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    _issue(crt, keyp, ca_cert, ca_key, [x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")],
           ExtendedKeyUsageOID.SERVER_AUTH, sans)
    return crt, keyp


def _issue(crt: Path, keyp: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
           subject: list[x509.NameAttribute], usage: x509.ObjectIdentifier,
           sans: list[x509.GeneralName] | None = None) -> None:
    """A new key and a one-year leaf certificate from the CA, written atomically (key 0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write_key(keyp, key)
    atomic_write_bytes(crt, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM),
                       mode=0o644)


def ensure_client_cert(pki: Path, stem: str, common_name: str, organizations: list[str]) -> tuple[Path, Path]:
    """A client certificate from the cluster CA (CN = user, O = groups, as x509 client auth maps
    them); reissued when it is near expiry or the CA changed. The API server presents
    `apiserver-kubelet-client` (kube-apiserver-kubelet-client / system:masters, kubeadm's
    identity) to agents: unlike a bearer token, nothing an agent receives lets it act as it."""
    ca_cert, ca_key = ensure_ca(pki)
    crt, keyp = pki / f"{stem}.crt", pki / f"{stem}.key"
    if crt.exists() and keyp.exists():
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        if cert.issuer == ca_cert.subject and cert.not_valid_after_utc - _now() > datetime.timedelta(days=30):
            return crt, keyp
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    _issue(crt, keyp, ca_cert, ca_key, subject, ExtendedKeyUsageOID.CLIENT_AUTH)
    return crt, keyp


def ca_pem(pki: Path) -> bytes:
    return (pki / "ca.crt").read_bytes()


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
