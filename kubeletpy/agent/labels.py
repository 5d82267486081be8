"""What the agent writes on CRI sandboxes and containers.

Everything a restarted agent needs to adopt running pods is on the runtime's objects, not
in the agent's memory: which pod (uid/name/namespace) and container name (labels, so CRI
list filters can select on them), and restart count, spec hash, grace period and
termination message path (annotations). The keys are the kubelet's, so `crictl` users and
tools that know them read our containers the same way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
CONTAINER_KIND = "io.kubeletpy.container.kind"  # "init", "regular" or "ephemeral"
RESTART_COUNT = "io.kubernetes.container.restartCount"
CONTAINER_HASH = "io.kubernetes.container.hash"
GRACE_PERIOD = "io.kubernetes.pod.terminationGracePeriod"
TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"
PRE_STOP = "io.kubernetes.container.preStopHandler"
MANAGED = "io.kubeletpy.agent.managed"  # only objects with this label are ours to adopt or GC
CONFIG_SOURCE = "kubernetes.io/config.source"
CONFIG_HASH = "kubernetes.io/config.hash"
CONFIG_MIRROR = "kubernetes.io/config.mirror"
CONFIG_SEEN = "kubernetes.io/config.seen"


def pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    md = pod.get("metadata") or {}
    out = {str(k): str(v) for k, v in (md.get("labels") or {}).items()}
    out.update({POD_NAME: md.get("name", ""), POD_NAMESPACE: md.get("namespace", ""), POD_UID: md.get("uid", ""),
                MANAGED: "true"})
    return out


def container_labels(pod: dict[str, Any], name: str, kind: str) -> dict[str, str]:
    md = pod.get("metadata") or {}
    return {POD_NAME: md.get("name", ""), POD_NAMESPACE: md.get("namespace", ""), POD_UID: md.get("uid", ""),
            CONTAINER_NAME: name, CONTAINER_KIND: kind, MANAGED: "true"}


def container_hash(container: dict[str, Any]) -> str:
    """Hash of the container spec: a change (e.g. `kubectl set image`) restarts the container.
    Fields the API may default later (resources, probes) are included as given."""
    data = json.dumps(container, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]
