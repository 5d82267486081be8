"""Writing and reading the kubeconfig files kubectl and the node agent use."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from cri.fsutil import atomic_write_bytes


def render(server: str, ca_pem: bytes, token: str, user: str, cluster: str = "kubeletpy") -> str:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user,
                                                               "namespace": "default"}}],
        "current-context": f"{user}@{cluster}",
        "preferences": {},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def write(path: Path, server: str, ca_pem: bytes, token: str, user: str) -> None:
    atomic_write_bytes(path, render(server, ca_pem, token, user).encode(), mode=0o600)


def load(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def current(cfg: dict[str, Any]) -> tuple[str, str, str]:
    """(server, ca-data base64, token) of the current context, or empty strings."""
    ctx_name = cfg.get("current-context")
    ctx = next((c.get("context") or {} for c in cfg.get("contexts") or [] if c.get("name") == ctx_name), {})
    cl = next((c.get("cluster") or {} for c in cfg.get("clusters") or [] if c.get("name") == ctx.get("cluster")), {})
    us = next((u.get("user") or {} for u in cfg.get("users") or [] if u.get("name") == ctx.get("user")), {})
    return str(cl.get("server", "")), str(cl.get("certificate-authority-data", "")), str(us.get("token", ""))
