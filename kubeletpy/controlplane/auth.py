"""Authentication (bearer tokens) and authorization (admin, node, join).

Identities
* **admin** -- the token in the admin kubeconfig; user `kubernetes-admin`, group
  `system:masters`; may do everything (including impersonation, `kubectl --as=...`).
* **join** -- the node-join token, written once to `<data-dir>/join-token` (mode 0600) for
  the operator; it may do exactly one thing: `POST /kubeletpy/join {"nodeName": "n1"}`,
  which mints a per-node token for user `system:node:n1` (group `system:nodes`) and
  revokes that node's previous tokens. The node then uses only its own token. So a node
  identity is bound to a secret minted for that name, never to a header the caller picks.
* **node** -- `system:node:<name>`: NodeRestriction-like rules, see `authorize`.

Tokens are stored as SHA-256 hashes in `<data-dir>/tokens.json`; only the holder has the
plaintext (the admin kubeconfig, the join-token file, the node's kubeconfig).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cri.fsutil import atomic_write_bytes, atomic_write_json, read_json

from . import kinds
from .errors import forbidden_error

if TYPE_CHECKING:
    from .registry import Registry

ADMIN_USER = "kubernetes-admin"
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
JOIN_USER = "system:bootstrap:node-join"
NODE_PREFIX = "system:node:"


@dataclass(frozen=True, slots=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return "system:masters" in self.groups

    @property
    def node(self) -> str | None:
        if self.name.startswith(NODE_PREFIX) and "system:nodes" in self.groups:
            return self.name[len(NODE_PREFIX):]
        return None


ADMIN = User(ADMIN_USER, ("system:masters", "system:authenticated"))
JOIN = User(JOIN_USER, ("system:bootstrappers", "system:authenticated"))


def node_user(name: str) -> User:
    return User(NODE_PREFIX + name, ("system:nodes", "system:authenticated"))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Hashed bearer tokens in one JSON file (rewritten atomically on change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = read_json(path, {"tokens": []})
        self._tokens: dict[str, dict[str, Any]] = {t["sha256"]: t for t in data.get("tokens", [])}

    def _save(self) -> None:
        atomic_write_json(self.path, {"tokens": list(self._tokens.values())}, mode=0o600)

    def authenticate(self, token: str) -> User | None:
        t = self._tokens.get(_hash(token))
        return User(t["user"], tuple(t.get("groups", ()))) if t else None

    def mint(self, user: User) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens[_hash(token)] = {"sha256": _hash(token), "user": user.name, "groups": list(user.groups),
                                      "created": int(time.time())}
        self._save()
        return token

    def revoke_user(self, name: str) -> None:
        before = len(self._tokens)
        self._tokens = {h: t for h, t in self._tokens.items() if t["user"] != name}
        if len(self._tokens) != before:
            self._save()

    def has_user(self, name: str) -> bool:
        return any(t["user"] == name for t in self._tokens.values())


def ensure_join_token(store: TokenStore, data_dir: Path) -> None:
    """Mint the node-join token on first start and leave the operator's copy in the data dir."""
    path = data_dir / "join-token"
    if store.has_user(JOIN_USER) and path.exists():
        return
    store.revoke_user(JOIN_USER)
    atomic_write_bytes(path, (store.mint(JOIN) + "\n").encode(), mode=0o600)


def retire_kubelet_client_token(store: TokenStore, data_dir: Path) -> None:
    """Earlier versions called agents with a system:masters bearer token, which any agent that
    received it could replay against this server. The API server now authenticates to agents
    with a client certificate (pki.ensure_client_cert); the old token is revoked and removed."""
    store.revoke_user(KUBELET_CLIENT_USER)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / "kubelet-client-token").unlink()


# -- authorization

@dataclass(slots=True)
class Attributes:
    verb: str          # get list watch create update patch delete deletecollection
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    obj: Any = None    # the request body of a create: NodeRestriction-style checks look at it


def _deny(user: User, a: Attributes, why: str) -> Exception:
    res = a.resource + (f"/{a.subresource}" if a.subresource else "")
    what = f'{a.resource}{"." + a.group if a.group else ""}'
    what += f' "{a.name}"' if a.name else ""
    where = f' in the namespace "{a.namespace}"' if a.namespace else " at the cluster scope"
    return forbidden_error(f'{what} is forbidden: User "{user.name}" cannot {a.verb} resource "{res}" in API group '
                           f'"{a.group}"{where}: {why}', a.resource, a.name, a.group)


def _references(pod: dict[str, Any], resource: str, name: str) -> bool:
    """Does the pod use this secret/configmap (volumes, projected volumes, env, envFrom, pull secrets)?"""
    spec = pod.get("spec") or {}
    is_secret = resource == "secrets"
    if is_secret and any(r.get("name") == name for r in spec.get("imagePullSecrets") or []):
        return True
    for vol in spec.get("volumes") or []:
        if is_secret and (vol.get("secret") or {}).get("secretName") == name:
            return True
        if not is_secret and (vol.get("configMap") or {}).get("name") == name:
            return True
        for src in (vol.get("projected") or {}).get("sources") or []:
            if (src.get("secret" if is_secret else "configMap") or {}).get("name") == name:
                return True
    ref_key, from_key = ("secretKeyRef", "secretRef") if is_secret else ("configMapKeyRef", "configMapRef")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) + (
            spec.get("ephemeralContainers") or []):
        for e in c.get("env") or []:
            if ((e.get("valueFrom") or {}).get(ref_key) or {}).get("name") == name:
                return True
        for e in c.get("envFrom") or []:
            if (e.get(from_key) or {}).get("name") == name:
                return True
    return False


MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def _is_own_mirror_pod(obj: Any, node: str) -> bool:
    """A node may create the mirror pod of one of its static pods (as NodeRestriction allows):
    bound to itself, annotated as a mirror, and using no Secret/ConfigMap it could not read."""
    if not isinstance(obj, dict):
        return False
    md, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if MIRROR_ANNOTATION not in (md.get("annotations") or {}) or spec.get("nodeName") != node:
        return False
    uses = [v for v in spec.get("volumes") or [] if {"secret", "configMap", "projected"} & set(v)]
    return not uses and not spec.get("imagePullSecrets")


async def authorize(user: User, a: Attributes, registry: Registry) -> None:
    """Raise a 403 APIError unless `user` may do `a`."""
    if user.is_admin:
        return
    node = user.node
    if node is None:
        raise _deny(user, a, "no RBAC policy matched")
    read = a.verb in ("get", "list", "watch")
    r, sub = a.resource, a.subresource
    if r == "nodes" and a.group == "":
        if read or (a.name == node and a.verb in ("create", "update", "patch", "delete")):
            return
        raise _deny(user, a, f"node '{node}' cannot modify node '{a.name}'")
    if r == "pods" and a.group == "":
        if read and sub == "":
            return
        if a.verb == "create" and sub == "" and _is_own_mirror_pod(a.obj, node):
            return
        if a.name and ((sub == "status" and a.verb in ("get", "update", "patch")) or (sub == "" and a.verb == "delete")):
            try:
                pod = await registry.get(kinds.POD, a.namespace, a.name)
            except Exception:
                pod = None
            if pod is None or (pod.get("spec") or {}).get("nodeName") == node:
                return  # a missing pod is answered 404 by the handler, like the real authorizer lets through
        raise _deny(user, a, f"node '{node}' can only update the status of, and delete, pods bound to it")
    if r == "leases" and a.group == "coordination.k8s.io":
        if a.namespace == "kube-node-lease" and a.name == node and a.verb in ("get", "create", "update", "patch",
                                                                             "delete"):
            return
        raise _deny(user, a, f"node '{node}' can only access its own lease in kube-node-lease")
    if r == "events" and a.group in ("", "events.k8s.io") and a.verb in ("create", "update", "patch"):
        return
    if r == "namespaces" and a.group == "" and a.verb == "get" and not sub:
        return
    if r == "certificatesigningrequests" and a.group == "certificates.k8s.io" and not sub and (
            read or a.verb == "create"):
        return  # the system:node role: a node asks for its own certificates (the signer's rules decide what)
    if r in ("secrets", "configmaps") and a.group == "" and a.verb == "get" and a.name:
        pods, _, _ = await registry.list(kinds.POD, a.namespace, fields=[("spec.nodeName", True, node)])
        if any(_references(p, r, a.name) for p in pods):
            return
        raise _deny(user, a, f"no relationship found between node '{node}' and this object")
    raise _deny(user, a, "no RBAC policy matched")
