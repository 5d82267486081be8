"""Where the client connects and how it proves who it is: a kubeconfig, or explicit values.

Only what our control plane issues is supported -- bearer tokens (inline or `tokenFile`)
and a CA (inline `certificate-authority-data` or a `certificate-authority` file), plus
`insecure-skip-tls-verify` for completeness. Relative file paths are resolved against
the kubeconfig's directory, as kubectl does.
"""

from __future__ import annotations

import base64
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(slots=True)
class ClientConfig:
    server: str
    token: str = ""
    ca_pem: bytes = b""
    insecure: bool = False
    namespace: str = "default"

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return False
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.ca_pem:
            ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        else:
            ctx = ssl.create_default_context()
        return ctx


def _pick(items: list, name: str | None) -> dict:
    for it in items or []:
        if isinstance(it, dict) and it.get("name") == name:
            return it
    return {}


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> ClientConfig:
    """The ClientConfig of `context` (default: current-context) in a kubeconfig file."""
    p = Path(path).expanduser()
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a kubeconfig")
    ctx_name = context or data.get("current-context")
    ctx = _pick(data.get("contexts"), ctx_name).get("context") or {}
    if not ctx and len(data.get("contexts") or []) == 1:
        ctx = data["contexts"][0].get("context") or {}
    cluster = _pick(data.get("clusters"), ctx.get("cluster")).get("cluster") or {}
    user = _pick(data.get("users"), ctx.get("user")).get("user") or {}
    if not cluster.get("server"):
        raise ValueError(f"{p}: context {ctx_name!r} has no cluster server")

    def resolve(f: str) -> Path:
        fp = Path(f).expanduser()
        return fp if fp.is_absolute() else p.parent / fp

    ca = b""
    if cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        ca = resolve(cluster["certificate-authority"]).read_bytes()
    token = str(user.get("token") or "")
    if not token and user.get("tokenFile"):
        token = resolve(user["tokenFile"]).read_text().strip()
    return ClientConfig(server=str(cluster["server"]).rstrip("/"), token=token, ca_pem=ca,
                        insecure=bool(cluster.get("insecure-skip-tls-verify")),
                        namespace=str(ctx.get("namespace") or "default"))
