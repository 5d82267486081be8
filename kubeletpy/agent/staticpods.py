"""Static pods: pod manifests in a directory, run without the API, mirrored into it.

Each *.yaml/*.yml/*.json file holds one Pod. Its uid is a hash of the file's content and
the node name (so an edit is a new pod, and a restarted agent derives the same uid and
adopts the running containers); its name gets the node name appended, as the kubelet
does. The agent creates a read-only "mirror pod" in the API carrying the annotation
`kubernetes.io/config.mirror` so kubectl can see it; deleting the mirror pod does not stop
the static pod (it is recreated), removing the file does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from kubeletpy.agent import labels as L

log = logging.getLogger("kubeletpy.agent.staticpods")


def load_manifest(path: Path, node: str) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
        obj = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as e:
        log.warning("static pod %s: %s", path, e)
        return None
    if not isinstance(obj, dict) or obj.get("kind", "Pod") != "Pod":
        return None
    md = obj.setdefault("metadata", {})
    if not md.get("name"):
        return None
    digest = hashlib.sha256(raw + b"\0" + node.encode()).hexdigest()
    uid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    md["name"] = f"{md['name']}-{node}"
    md["namespace"] = md.get("namespace") or "default"
    md["uid"] = uid
    ann = md.setdefault("annotations", {})
    ann.update({L.CONFIG_SOURCE: "file", L.CONFIG_HASH: uid, L.CONFIG_SEEN: "true"})
    spec = obj.setdefault("spec", {})
    spec["nodeName"] = node
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
    obj["apiVersion"], obj["kind"] = "v1", "Pod"
    obj["status"] = {}
    return obj


def scan(directory: Path | None, node: str) -> dict[str, dict[str, Any]]:
    """uid -> pod for every manifest in the directory."""
    out: dict[str, dict[str, Any]] = {}
    if directory is None or not directory.is_dir():
        return out
    for p in sorted(directory.iterdir()):
        if p.name.startswith(".") or p.suffix not in (".yaml", ".yml", ".json") or not p.is_file():
            continue
        pod = load_manifest(p, node)
        if pod is not None:
            out[pod["metadata"]["uid"]] = pod
    return out


def mirror_of(pod: dict[str, Any]) -> dict[str, Any]:
    """The API object for a static pod: same spec, annotation config.mirror, no uid."""
    m = copy.deepcopy(pod)
    md = m["metadata"]
    md.pop("uid", None)
    md.pop("resourceVersion", None)
    md["annotations"][L.CONFIG_MIRROR] = md["annotations"][L.CONFIG_HASH]
    m.pop("status", None)
    return m


def is_static(pod: dict[str, Any]) -> bool:
    """From a manifest file (or its mirror in the API): node-critical, never evicted."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return ann.get(L.CONFIG_SOURCE) == "file" or L.CONFIG_MIRROR in ann


def is_mirror(pod: dict[str, Any]) -> bool:
    return L.CONFIG_MIRROR in ((pod.get("metadata") or {}).get("annotations") or {})


def fingerprint(pod: dict[str, Any]) -> str:
    return json.dumps(pod.get("spec"), sort_keys=True)
