"""Client side of node join, for the node agent (and `kubeletpy up`).

    text = join_node("https://10.0.0.1:6443", join_token, "node-1", ca_pem)
    Path("/etc/kubeletpy/node.kubeconfig").write_text(text)

The agent then talks to the API server as `system:node:node-1` with a token minted for
that name alone (see auth.py). `ca_pem` is the cluster CA (`<data-dir>/pki/ca.crt`); the
join request itself is verified against it, so the join token never goes to an impostor.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

from . import kubeconfig


class JoinError(Exception):
    pass


def join_node(server: str, join_token: str, node_name: str, ca_pem: bytes, timeout: float = 30) -> str:
    """Exchange the join token for this node's credentials; return a kubeconfig for it."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    req = urllib.request.Request(
        server.rstrip("/") + "/kubeletpy/join", method="POST",
        data=json.dumps({"nodeName": node_name}).encode(),
        headers={"Authorization": f"Bearer {join_token.strip()}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            cred = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("message", "")
        except ValueError:
            msg = ""
        raise JoinError(f"join as {node_name!r} refused: HTTP {e.code} {msg}") from None
    except (OSError, ValueError) as e:
        raise JoinError(f"join as {node_name!r} failed: {e}") from None
    return kubeconfig.render(server, ca_pem, cred["token"], cred["user"])
