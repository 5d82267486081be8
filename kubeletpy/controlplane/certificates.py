"""`certificates.k8s.io/v1` CertificateSigningRequest: the kind a node uses to get its
serving certificate from the cluster (kubeletpy/agent/certificate.py asks,
kubeletpy/controllers/certificates.py approves and signs, `kubectl certificate approve|deny`
decides by hand).

Three ways in, each owning its part, as in the real API server:
* the object itself (create, labels): the requester (`spec.username`, `uid`, `groups`,
  `extra`) is filled in from who is asking, never from the body; the spec never changes
  afterwards and status cannot be written here;
* `/approval`: only the Approved and Denied conditions;
* `/status`: the signer's `certificate` and other conditions (Failed), never Approved/Denied.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from cryptography import x509

from . import validation as v
from .errors import Cause, duplicate, forbidden, invalid, not_supported, required
from .strategy import AGE_COLUMN, NAME_COLUMN, Strategy, age, column, human_duration

S, I, ANY, T = v.STR, v.INT, v.ANY, v.TIME  # noqa: E741  (as in kinds.py)
L, M = v.ListOf, v.MapOf

USAGES = ["signing", "digital signature", "content commitment", "key encipherment", "key agreement",
          "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth",
          "client auth", "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel",
          "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]
DECISIONS = ("Approved", "Denied")
MIN_EXPIRATION = 600


def _pem_blocks(data: bytes, kind: str) -> int:
    return data.count(f"-----BEGIN {kind}-----".encode())


def _b64(value: Any) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except (binascii.Error, ValueError):
        return None


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _stamped(conditions: list[dict[str, Any]], old: dict[str, Any]) -> list[dict[str, Any]]:
    """The real server's defaults for a written condition: status True, and its times set to now
    when new (kubectl certificate approve sends neither time), kept when unchanged."""
    before = {c.get("type"): c for c in _conditions(old)}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for c in conditions:
        c = {**c, "status": c.get("status") or "True"}
        prev = before.get(c.get("type"))
        same = prev is not None and prev.get("status") == c["status"]
        for stamp in ("lastUpdateTime", "lastTransitionTime"):
            if not c.get(stamp):
                c[stamp] = (prev or {}).get(stamp) or now if same else now
        out.append(c)
    return out


class CertificateSigningRequestStrategy(Strategy):
    group, kind, resource, singular = "certificates.k8s.io", "CertificateSigningRequest", \
        "certificatesigningrequests", "certificatesigningrequest"
    namespaced = False
    short_names = ("csr",)
    subresources = ("status", "approval")
    status_split = True
    schema = {
        "spec": {"request": S, "signerName": S, "expirationSeconds": I, "usages": L(S), "username": S, "uid": S,
                 "groups": L(S), "extra": M(L(S))},
        "status": {"conditions": L({"type": S, "status": S, "reason": S, "message": S, "lastUpdateTime": T,
                                    "lastTransitionTime": T}), "certificate": S},
    }
    field_selectors = frozenset({"metadata.name", "spec.signerName"})

    # -- who asked: set from the authenticated user, never from the body
    def set_requester(self, obj: dict[str, Any], user: str, groups: tuple[str, ...], uid: str) -> None:
        spec = obj.setdefault("spec", {})
        spec["username"], spec["groups"] = user, list(groups)
        spec.pop("extra", None)
        if uid:
            spec["uid"] = uid
        else:
            spec.pop("uid", None)

    def prepare_create(self, obj: dict[str, Any]) -> None:
        obj["status"] = {}  # decided and issued only through approval and status, as the real server

    def prepare_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        new["spec"] = old.get("spec", {})
        new["status"] = old.get("status", {})

    def prepare_status_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        """The signer's part: everything but the decisions, which stay as they were."""
        super().prepare_status_update(new, old)
        status = dict(new.get("status") or {})
        kept = [c for c in _conditions(old) if c.get("type") in DECISIONS]
        status["conditions"] = kept + _stamped([c for c in status.get("conditions") or []
                                                if c.get("type") not in DECISIONS], old)
        new["status"] = status

    def prepare_subresource_update(self, subresource: str, new: dict[str, Any], old: dict[str, Any]) -> None:
        """`/approval`: the decisions from the request, everything else as stored."""
        asked = [c for c in _conditions(new) if c.get("type") in DECISIONS]
        super().prepare_subresource_update(subresource, new, old)
        status = dict(old.get("status") or {})
        status["conditions"] = _stamped(asked, old) + [c for c in _conditions(old) if c.get("type") not in DECISIONS]
        new["status"] = status

    # -- validation
    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        spec = obj.get("spec") or {}
        out: list[Cause] = []
        raw = _b64(spec.get("request"))
        if not spec.get("request"):
            out.append(required("spec.request"))
        elif raw is None:
            out.append(invalid("spec.request", "<bytes>", "must be base64-encoded PEM"))
        elif _pem_blocks(raw, "CERTIFICATE REQUEST") != 1:
            out.append(invalid("spec.request", "<bytes>", "PEM block type must be CERTIFICATE REQUEST"))
        else:
            try:
                req = x509.load_pem_x509_csr(raw)
                # parse all of it now, so no controller trips over it later (duplicate extensions,
                # an unsupported key type)
                list(req.extensions)
                req.subject.rfc4514_string()
                req.public_key()
                if not req.is_signature_valid:
                    out.append(invalid("spec.request", "<bytes>", "x509: invalid signature"))
            except Exception as e:  # noqa: BLE001 - cryptography raises several kinds for malformed input
                out.append(invalid("spec.request", "<bytes>", f"x509: {e}"))
        signer = spec.get("signerName")
        if not signer:
            out.append(required("spec.signerName"))
        elif not isinstance(signer, str) or "/" not in signer or not signer.split("/", 1)[0] or \
                not signer.split("/", 1)[1] or v.qualified_name("spec.signerName", signer):
            out.append(invalid("spec.signerName", signer, "must be a fully qualified domain and path of the form "
                                                          "'example.com/signer-name'"))
        usages = spec.get("usages")
        if not usages:
            out.append(required("spec.usages"))
        else:
            seen: set[str] = set()
            for i, u in enumerate(usages):
                if u not in USAGES:
                    out.append(not_supported(f"spec.usages[{i}]", u, USAGES))
                elif u in seen:
                    out.append(duplicate(f"spec.usages[{i}]", u))
                seen.add(u)
        exp = spec.get("expirationSeconds")
        if exp is not None and (not isinstance(exp, int) or exp < MIN_EXPIRATION):
            out.append(invalid("spec.expirationSeconds", exp,
                               f"may not specify a duration less than {MIN_EXPIRATION} seconds (10 minutes)"))
        return out + self._validate_status(obj)

    def _validate_status(self, obj: dict[str, Any]) -> list[Cause]:
        out: list[Cause] = []
        types: set[str] = set()
        for i, c in enumerate(_conditions(obj)):
            t = c.get("type")
            if not t:
                out.append(required(f"status.conditions[{i}].type"))
                continue
            if t in types:
                out.append(duplicate(f"status.conditions[{i}].type", t))
            types.add(t)
            st = c.get("status") or "True"
            if t in (*DECISIONS, "Failed") and st != "True":
                out.append(not_supported(f"status.conditions[{i}].status", st, ["True"]))
            elif st not in ("True", "False", "Unknown"):
                out.append(not_supported(f"status.conditions[{i}].status", st, ["False", "True", "Unknown"]))
        if set(DECISIONS) <= types:
            out.append(invalid("status.conditions", "Approved, Denied",
                               "Approved and Denied conditions are mutually exclusive"))
        cert = (obj.get("status") or {}).get("certificate")
        if cert:
            raw = _b64(cert)
            if raw is None or not _pem_blocks(raw, "CERTIFICATE"):
                out.append(invalid("status.certificate", "<certificate data>",
                                   "must contain at least one CERTIFICATE PEM block"))
            else:
                try:
                    x509.load_pem_x509_certificates(raw)
                except ValueError as e:
                    out.append(invalid("status.certificate", "<certificate data>", str(e)))
        return out

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
        """Main resource and /status: decisions and an issued certificate are final."""
        return self.validate(new) + self._kept(new, old, ("Failed",)) + self._cert_kept(new, old)

    def validate_subresource_update(self, subresource: str, new: dict[str, Any],
                                    old: dict[str, Any]) -> list[Cause]:
        return self.validate(new) + self._kept(new, old, DECISIONS)

    @staticmethod
    def _kept(new: dict[str, Any], old: dict[str, Any], types: tuple[str, ...]) -> list[Cause]:
        now = {c.get("type") for c in _conditions(new)}
        return [forbidden("status.conditions", f'updates may not remove a condition of type "{t}"')
                for t in types if t in {c.get("type") for c in _conditions(old)} and t not in now]

    @staticmethod
    def _cert_kept(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
        was = (old.get("status") or {}).get("certificate")
        if was and (new.get("status") or {}).get("certificate") != was:
            return [forbidden("status.certificate", "updates may not modify existing certificate content")]
        return []

    # -- presentation (kubectl get csr)
    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN, AGE_COLUMN, column("SignerName"), column("Requestor"), column("RequestedDuration"),
                column("Condition")]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        types = {c.get("type") for c in _conditions(obj) if (c.get("status") or "True") == "True"}
        cond = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
        if "Failed" in types:
            cond += ",Failed"
        if status.get("certificate"):
            cond += ",Issued"
        exp = spec.get("expirationSeconds")
        return [obj["metadata"]["name"], age(obj, now), spec.get("signerName", ""), spec.get("username", ""),
                human_duration(exp) if exp else "<none>", cond]

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"metadata.name": obj["metadata"].get("name", ""),
                "spec.signerName": (obj.get("spec") or {}).get("signerName", "")}


CSR = CertificateSigningRequestStrategy()
