"""The CSR approver's and signer's rules, on real keys, CSRs and certificates (no API server
here; the end-to-end flow through the API and kubectl is in test_certificates_api.py)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeletpy.agent import certificate as agentcert
from kubeletpy.controllers import certificates as certs
from kubeletpy.controlplane import pki


def csr_obj(pem: bytes, username: str = "system:node:n1", groups: tuple[str, ...] = ("system:nodes",
            "system:authenticated"), usages: tuple[str, ...] = ("digital signature", "server auth"),
            **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "csr-x"}, "spec": {
        "request": base64.b64encode(pem).decode(), "signerName": certs.KUBELET_SERVING, "usages": list(usages),
        "username": username, "groups": list(groups), **spec}}


def node(name: str = "n1", ip: str = "10.0.0.5") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                                                 {"type": "Hostname", "address": name}]}}


def custom_csr(subject: list[x509.NameAttribute], sans: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_the_agents_request_is_approvable_for_its_own_node_only() -> None:
    _key, pem = agentcert.make_request("n1", ["10.0.0.5"])
    obj = csr_obj(pem)
    req = certs.parse_request(obj)
    assert certs.serving_problems(obj, req) == []
    assert certs.approval_problems(obj, req, node()) == []
    # another node asking for n1's name, or n1 claiming an address it does not have
    assert "not by node 'n1' itself" in certs.approval_problems(csr_obj(pem, "system:node:n2"), req, node())[0]
    assert certs.approval_problems(csr_obj(pem, groups=("system:authenticated",)), req, node())
    assert certs.approval_problems(obj, req, node(ip="10.0.0.6")) == [
        "IP address 10.0.0.5 is not one of node n1's addresses"]
    assert certs.approval_problems(obj, req, None) == ["node 'n1' is not registered"]


def test_requests_outside_the_kubelet_serving_rules() -> None:
    nodes_o = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes")
    cn = x509.NameAttribute(NameOID.COMMON_NAME, "system:node:n1")
    dns = [x509.DNSName("n1")]
    cases = [
        (custom_csr([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"), cn], dns), {},
         "subject organization must be exactly [system:nodes]"),
        (custom_csr([nodes_o, x509.NameAttribute(NameOID.COMMON_NAME, "admin")], dns), {},
         "subject common name must be system:node:<name>"),
        (custom_csr([nodes_o, cn], [*dns, x509.RFC822Name("a@b.c")]), {},
         "only DNS and IP subject alternative names"),
        (custom_csr([nodes_o, cn], []), {}, "at least one DNS or IP subject alternative name"),
        (custom_csr([nodes_o, cn], dns), {"usages": ("digital signature", "client auth")},
         "usages must include server auth"),
    ]
    for pem, kw, why in cases:
        obj = csr_obj(pem, **kw)
        problems = certs.serving_problems(obj, certs.parse_request(obj))
        assert any(why in p for p in problems), (why, problems)
    # a name the node does not have
    pem = custom_csr([nodes_o, cn], [*dns, x509.DNSName("kubernetes.default")])
    obj = csr_obj(pem)
    assert certs.approval_problems(obj, certs.parse_request(obj), node()) == [
        "DNS name 'kubernetes.default' is not node n1's name"]
    # names a node reports in its own status are not enough: only its node name
    spoof = node()
    spoof["status"]["addresses"] += [{"type": "InternalDNS", "address": "kubernetes.default"},
                                     {"type": "Hostname", "address": "localhost"}]
    pem = custom_csr([nodes_o, cn], [*dns, x509.DNSName("localhost")])
    obj = csr_obj(pem)
    assert certs.approval_problems(obj, certs.parse_request(obj), spoof) == ["DNS name 'localhost' is not node n1's name"]
    # an address another node reports is not approved for this one
    _key, pem = agentcert.make_request("n1", ["10.0.0.5"])
    obj = csr_obj(pem)
    assert certs.approval_problems(obj, certs.parse_request(obj), node(), [node(), node("n2", "10.0.0.5")]) == [
        "IP address 10.0.0.5 is also claimed by another node"]
    assert certs.approval_problems(obj, certs.parse_request(obj), node(), [node(), node("n2", "10.0.0.6")]) == []


def test_signed_certificate_chains_to_the_cluster_ca(tmp_path: Any) -> None:
    ca_cert, ca_key = pki.ensure_ca(tmp_path)
    signer = certs.Signer(ca_cert, ca_key)
    key, pem = agentcert.make_request("n1", ["10.0.0.5"])
    obj = csr_obj(pem, expirationSeconds=3600)
    now = dt.datetime.now(dt.UTC)
    cert = x509.load_pem_x509_certificate(signer.sign(obj, certs.parse_request(obj), now))
    cert.verify_directly_issued_by(ca_cert)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(seconds=3600 + 300)
    # the signer caps what is asked for
    capped = certs.Signer(ca_cert, ca_key, max_duration=600)
    c2 = x509.load_pem_x509_certificate(capped.sign(obj, certs.parse_request(obj), now))
    assert c2.not_valid_after_utc - now < dt.timedelta(seconds=601)
    assert agentcert.names_match(cert, "n1", ["10.0.0.5"])
    assert not agentcert.names_match(cert, "n2", ["10.0.0.5"]) and not agentcert.names_match(cert, "n1", ["10.0.0.6"])
    # renewal falls in 70-90 % of the lifetime
    start, life = cert.not_valid_before_utc, cert.not_valid_after_utc - cert.not_valid_before_utc
    for _ in range(20):
        assert start + life * 0.7 <= agentcert.renewal_time(cert) <= start + life * 0.9


def test_conditions_read_like_kubectl() -> None:
    csr = {"status": {"conditions": [{"type": "Approved", "status": "True"}, {"type": "Failed", "status": "False"}]}}
    assert certs.conditions(csr) == {"Approved"}
    assert agentcert._refusal({"status": {"conditions": [{"type": "Denied", "reason": "No", "message": "go away"}]}}) \
        == "Denied: No go away"


def test_cleaner_keeps_decisions_an_hour_and_pending_requests_a_day() -> None:
    def csr(created: str, *conds: tuple[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": "c", "creationTimestamp": created},
                "status": {"conditions": [{"type": t, "status": "True", "lastUpdateTime": at} for t, at in conds]}}

    now = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.UTC).timestamp()
    assert not certs.expired(csr("2026-01-02T00:00:00Z"), now)               # pending 12 h
    assert certs.expired(csr("2026-01-01T11:00:00Z"), now)                   # pending 25 h
    assert not certs.expired(csr("2026-01-01T00:00:00Z", ("Approved", "2026-01-02T11:30:00Z")), now)
    assert certs.expired(csr("2026-01-02T10:00:00Z", ("Denied", "2026-01-02T10:30:00Z")), now)
    assert certs.expired(csr("2026-01-02T10:00:00Z", ("Approved", "2026-01-02T10:00:00Z"),
                             ("Failed", "2026-01-02T10:50:00Z")), now)
