"""The kinds served now: Namespace, Pod, Node, Lease, Event (core and events.k8s.io),
ConfigMap, Secret, and CertificateSigningRequest (certificates.py). Each is a `Strategy`; see strategy.py for what the hooks mean.

Schemas list the fields the real types have (probes, affinity, security contexts and
volume sources other than the common ones are accepted as free-form), which is what
`fieldValidation=Strict` checks against.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import TYPE_CHECKING, Any

from . import validation as v
from .errors import Cause, duplicate, forbidden, invalid, not_found_cause, not_supported, required
from .strategy import AGE_COLUMN, NAME_COLUMN, Strategy, age, column, human_duration, parse_time

if TYPE_CHECKING:
    from .registry import Registry

S, I, B, Q, ANY, T = v.STR, v.INT, v.BOOL, v.QTY, v.ANY, v.TIME  # noqa: E741  (short names keep the schemas readable)
L, M = v.ListOf, v.MapOf

KEY_TO_PATH = L({"key": S, "path": S, "mode": I})
CONTAINER: dict[str, Any] = {
    "name": S, "image": S, "command": L(S), "args": L(S), "workingDir": S,
    "ports": L({"name": S, "hostPort": I, "containerPort": I, "protocol": S, "hostIP": S}),
    "envFrom": L({"prefix": S, "configMapRef": {"name": S, "optional": B}, "secretRef": {"name": S, "optional": B}}),
    "env": L({"name": S, "value": S, "valueFrom": {
        "fieldRef": {"apiVersion": S, "fieldPath": S},
        "resourceFieldRef": {"containerName": S, "resource": S, "divisor": Q},
        "configMapKeyRef": {"name": S, "key": S, "optional": B},
        "secretKeyRef": {"name": S, "key": S, "optional": B}, "fileKeyRef": ANY}}),
    "resources": {"limits": M(Q), "requests": M(Q), "claims": L(ANY)},
    "resizePolicy": L({"resourceName": S, "restartPolicy": S}), "restartPolicy": S,
    "volumeMounts": L({"name": S, "readOnly": B, "recursiveReadOnly": S, "mountPath": S, "subPath": S,
                       "mountPropagation": S, "subPathExpr": S}),
    "volumeDevices": L({"name": S, "devicePath": S}),
    "livenessProbe": ANY, "readinessProbe": ANY, "startupProbe": ANY, "lifecycle": ANY,
    "terminationMessagePath": S, "terminationMessagePolicy": S, "imagePullPolicy": S, "securityContext": ANY,
    "stdin": B, "stdinOnce": B, "tty": B,
}
# EphemeralContainer: the Container fields plus the container whose namespaces it joins.
EPHEMERAL_CONTAINER: dict[str, Any] = {**CONTAINER, "targetContainerName": S}
VOLUME: dict[str, Any] = {
    "name": S,
    "hostPath": {"path": S, "type": S},
    "emptyDir": {"medium": S, "sizeLimit": Q},
    "configMap": {"name": S, "items": KEY_TO_PATH, "defaultMode": I, "optional": B},
    "secret": {"secretName": S, "items": KEY_TO_PATH, "defaultMode": I, "optional": B},
    "persistentVolumeClaim": {"claimName": S, "readOnly": B},
    **{src: ANY for src in ("gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs",
                            "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI", "fc", "azureFile",
                            "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "projected",
                            "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image")},
}
POD_SPEC: dict[str, Any] = {
    "volumes": L(VOLUME), "initContainers": L(CONTAINER), "containers": L(CONTAINER),
    "ephemeralContainers": L(EPHEMERAL_CONTAINER), "restartPolicy": S, "terminationGracePeriodSeconds": I,
    "activeDeadlineSeconds": I, "dnsPolicy": S, "nodeSelector": M(S), "serviceAccountName": S,
    "serviceAccount": S, "automountServiceAccountToken": B, "nodeName": S, "hostNetwork": B, "hostPID": B,
    "hostIPC": B, "shareProcessNamespace": B, "securityContext": ANY, "imagePullSecrets": L({"name": S}),
    "hostname": S, "subdomain": S, "affinity": ANY, "schedulerName": S,
    "tolerations": L({"key": S, "operator": S, "value": S, "effect": S, "tolerationSeconds": I}),
    "hostAliases": L({"ip": S, "hostnames": L(S)}), "priorityClassName": S, "priority": I, "dnsConfig": ANY,
    "readinessGates": L({"conditionType": S}), "runtimeClassName": S, "enableServiceLinks": B,
    "preemptionPolicy": S, "overhead": M(Q), "topologySpreadConstraints": L(ANY), "setHostnameAsFQDN": B,
    "os": {"name": S}, "hostUsers": B, "schedulingGates": L({"name": S}), "resourceClaims": L(ANY),
    "resources": ANY,
}
CONDITION = {"type": S, "status": S, "observedGeneration": I, "lastProbeTime": T, "lastHeartbeatTime": T,
             "lastTransitionTime": T, "reason": S, "message": S}
POD_STATUS: dict[str, Any] = {
    "phase": S, "conditions": L(CONDITION), "message": S, "reason": S, "nominatedNodeName": S, "hostIP": S,
    "hostIPs": L({"ip": S}), "podIP": S, "podIPs": L({"ip": S}), "startTime": T,
    "initContainerStatuses": L(ANY), "containerStatuses": L(ANY), "qosClass": S,
    "ephemeralContainerStatuses": L(ANY), "resize": S, "resourceClaimStatuses": L(ANY), "observedGeneration": I,
}
POD_TEMPLATE_SPEC: dict[str, Any] = {"metadata": ANY, "spec": POD_SPEC}  # for later workload kinds

RESTART_POLICIES = ["Always", "OnFailure", "Never"]
DNS_POLICIES = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _m(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


# ---------------------------------------------------------------- Namespace

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class NamespaceStrategy(Strategy):
    kind, resource, singular = "Namespace", "namespaces", "namespace"
    namespaced = False
    short_names = ("ns",)
    verbs = ("create", "delete", "get", "list", "patch", "update", "watch")
    subresources = ("status", "finalize")
    status_split = True
    name_validator = "label"
    schema = {"spec": {"finalizers": L(S)}, "status": {"phase": S, "conditions": L(CONDITION)}}
    field_selectors = frozenset({"metadata.name", "status.phase"})

    def prepare_create(self, obj: dict[str, Any]) -> None:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def prepare_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        super().prepare_update(new, old)
        new["spec"] = old.get("spec", {})
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]

    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN, column("Status", description="The status of the namespace"), AGE_COLUMN]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        return [_m(obj)["name"], (obj.get("status") or {}).get("phase", ""), age(obj, now)]

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"metadata.name": _m(obj).get("name", ""), "status.phase": (obj.get("status") or {}).get("phase", "")}


# ---------------------------------------------------------------- Pod

def _image_pull_policy(image: str) -> str:
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") and "@" not in image else "IfNotPresent"


def _qos(spec: dict[str, Any]) -> str:
    requests_seen = limits_seen = False
    guaranteed = True
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_seen = True
        if lim:
            limits_seen = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and v.parse_quantity(req[r]) != v.parse_quantity(lim[r])):
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed and limits_seen else "Burstable"


def _validate_container(c: Any, path: str, volumes: set[str], names: set[str]) -> list[Cause]:
    if not isinstance(c, dict):
        return [invalid(path, c, "must be an object")]
    out: list[Cause] = []
    name = c.get("name")
    out += v.dns1123_label(f"{path}.name", name)
    if isinstance(name, str) and name:
        if name in names:
            out.append(duplicate(f"{path}.name", name))
        names.add(name)
    if not c.get("image") or not str(c.get("image")).strip():
        out.append(required(f"{path}.image"))
    port_names: set[str] = set()
    for i, p in enumerate(c.get("ports") or []):
        pp = f"{path}.ports[{i}]"
        if "containerPort" not in p:
            out.append(required(f"{pp}.containerPort"))
        else:
            out += v.port_number(f"{pp}.containerPort", p["containerPort"])
        if p.get("hostPort"):
            out += v.port_number(f"{pp}.hostPort", p["hostPort"])
        if p.get("protocol") not in PROTOCOLS:
            out.append(not_supported(f"{pp}.protocol", p.get("protocol"), PROTOCOLS))
        if p.get("name"):
            out += v.port_name(f"{pp}.name", p["name"])
            if p["name"] in port_names:
                out.append(duplicate(f"{pp}.name", p["name"]))
            port_names.add(p["name"])
    for i, e in enumerate(c.get("env") or []):
        out += v.env_name(f"{path}.env[{i}].name", e.get("name"))
    res = c.get("resources") or {}
    parsed: dict[str, dict[str, Any]] = {"limits": {}, "requests": {}}
    for section in ("limits", "requests"):
        for rname, qty in (res.get(section) or {}).items():
            f = f"{path}.resources.{section}[{rname}]"
            q = v.parse_quantity(qty)
            if q is None:
                out.append(invalid(f, qty, v.QTY_MSG))
            elif q < 0:
                out.append(invalid(f, qty, "must be greater than or equal to 0"))
            else:
                parsed[section][rname] = q
    for rname, q in parsed["requests"].items():
        lim = parsed["limits"].get(rname)
        if lim is not None and q > lim:
            out.append(invalid(f"{path}.resources.requests", res["requests"][rname],
                               f"must be less than or equal to {rname} limit of {res['limits'][rname]}"))
    mounts: set[str] = set()
    for i, vm in enumerate(c.get("volumeMounts") or []):
        mp = f"{path}.volumeMounts[{i}]"
        if not vm.get("name"):
            out.append(required(f"{mp}.name"))
        elif vm["name"] not in volumes:
            out.append(not_found_cause(f"{mp}.name", vm["name"]))
        if not vm.get("mountPath"):
            out.append(required(f"{mp}.mountPath"))
        elif vm["mountPath"] in mounts:
            out.append(invalid(f"{mp}.mountPath", vm["mountPath"], "must be unique"))
        else:
            mounts.add(vm["mountPath"])
    if c.get("imagePullPolicy") is not None and c["imagePullPolicy"] not in PULL_POLICIES:
        out.append(not_supported(f"{path}.imagePullPolicy", c.get("imagePullPolicy"), PULL_POLICIES))
    if c.get("terminationMessagePolicy") is not None and c["terminationMessagePolicy"] not in (
            "File", "FallbackToLogsOnError"):
        out.append(not_supported(f"{path}.terminationMessagePolicy", c.get("terminationMessagePolicy"),
                                 ["File", "FallbackToLogsOnError"]))
    return out


# The fields an ephemeral container may set (Kubernetes' allowedEphemeralContainerFields): it is
# an allow list, so a field added to containers later is refused until someone decides otherwise.
# Ports, probes, lifecycle, resources and restart policies would make a debugging aid part of the
# workload.
EPHEMERAL_ALLOWED = frozenset({
    "name", "image", "command", "args", "workingDir", "envFrom", "env", "volumeMounts", "volumeDevices",
    "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin",
    "stdinOnce", "tty", "targetContainerName"})
EPHEMERAL_MSG = "cannot be set for an Ephemeral Container"
STATIC_EPHEMERAL_MSG = "static pods do not support ephemeral containers"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def _is_set(value: Any) -> bool:
    """Go's "differs from the zero value" for decoded JSON: kubectl sends `resources: {}`."""
    return value not in (None, "", 0, False, [], {})


def _validate_ephemeral(spec: dict[str, Any], volumes: set[str], names: set[str]) -> list[Cause]:
    """spec.ephemeralContainers: the common container rules, names unique across every kind of
    container, a target that is a regular or init container, and only the allowed fields."""
    targets = {c.get("name") for key in ("containers", "initContainers") for c in spec.get(key) or []
               if isinstance(c, dict)}
    out: list[Cause] = []
    for i, c in enumerate(spec.get("ephemeralContainers") or []):
        path = f"spec.ephemeralContainers[{i}]"
        out += _validate_container(c, path, volumes, names)
        if not isinstance(c, dict):
            continue
        target = c.get("targetContainerName")
        if target and target not in targets:
            out.append(not_found_cause(f"{path}.targetContainerName", target))
        out += [forbidden(f"{path}.{k}", EPHEMERAL_MSG) for k in CONTAINER
                if k not in EPHEMERAL_ALLOWED and _is_set(c.get(k))]
        for j, vm in enumerate(c.get("volumeMounts") or []):
            for k in ("subPath", "subPathExpr"):
                if isinstance(vm, dict) and vm.get(k):
                    out.append(forbidden(f"{path}.volumeMounts[{j}].{k}", EPHEMERAL_MSG))
    return out


def _ephemeral_changes(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """Ephemeral containers, once added, may be neither changed nor removed (they may be running)."""
    field = "spec.ephemeralContainers"
    have = {c.get("name"): c for c in (new.get("spec") or {}).get("ephemeralContainers") or []
            if isinstance(c, dict)}
    out: list[Cause] = []
    for c in (old.get("spec") or {}).get("ephemeralContainers") or []:
        name = c.get("name")
        if name not in have:
            out.append(forbidden(field, f'existing ephemeral containers "{name}" may not be removed'))
        elif have[name] != c:
            out.append(forbidden(field, f'existing ephemeral containers "{name}" may not be changed'))
    return out


def _default_container(c: Any) -> None:
    """SetDefaults_Container: what every kind of container gets when it is written."""
    if not isinstance(c, dict):
        return
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if isinstance(c.get("image"), str):
        c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))


POD_MUTABLE_MSG = ("pod updates may not change fields other than `spec.containers[*].image`,"
                   "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                   "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
                   "was previously negative)")


def _pod_status_reason(pod: dict[str, Any]) -> tuple[str, int, int, int, str]:
    """(STATUS column, ready, total, restarts, last restart age) the way kubectl's printer computes it."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    total = len(spec.get("containers") or [])
    reason = status.get("reason") or status.get("phase") or "Pending"
    ready = restarts = 0
    last_restart: float | None = None
    initializing = False
    inits = status.get("initContainerStatuses") or []
    for i, cs in enumerate(inits):
        restarts += int(cs.get("restartCount") or 0)
        st = cs.get("state") or {}
        term, wait = st.get("terminated"), st.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            r = term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                       else f"ExitCode:{term.get('exitCode')}")
            reason = "Init:" + r
        elif wait and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    has_running = False
    for cs in reversed(status.get("containerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        lt = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if parse_time(lt):
            last_restart = max(last_restart or 0, parse_time(lt) or 0)
        if initializing:
            continue
        st = cs.get("state") or {}
        if (st.get("waiting") or {}).get("reason"):
            reason = st["waiting"]["reason"]
        elif (st.get("terminated") or {}).get("reason"):
            reason = st["terminated"]["reason"]
        elif st.get("terminated"):
            t = st["terminated"]
            reason = f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}"
        elif cs.get("ready") and st.get("running"):
            has_running = True
            ready += 1
    if not initializing and reason == "Completed" and has_running:
        cond = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        reason = "Running" if cond.get("Ready") == "True" else "NotReady"
    if _m(pod).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    ago = human_duration(time.time() - last_restart) if last_restart else ""
    return reason, ready, total, restarts, ago


class PodStrategy(Strategy):
    kind, resource, singular = "Pod", "pods", "pod"
    short_names = ("po",)
    categories = ("all",)
    subresources = ("status", "binding", "ephemeralcontainers")
    generation = True
    status_split = True
    schema = {"spec": POD_SPEC, "status": POD_STATUS}
    field_selectors = frozenset({"metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
                                 "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
                                 "status.phase", "status.podIP", "status.nominatedNodeName"})

    def prepare_create(self, obj: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        tol = spec.setdefault("tolerations", [])
        if isinstance(tol, list):
            for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                if not any(isinstance(t, dict) and t.get("key") == key for t in tol):
                    tol.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            if not isinstance(c, dict):
                continue
            _default_container(c)
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
        for vol in spec.get("volumes") or []:
            if isinstance(vol, dict):
                for src in ("configMap", "secret"):
                    if isinstance(vol.get(src), dict):
                        vol[src].setdefault("defaultMode", 420)
                if isinstance(vol.get("hostPath"), dict):
                    vol["hostPath"].setdefault("type", "")
        obj["status"] = {"phase": "Pending", "qosClass": _qos(spec)}

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [required("spec")]
        out: list[Cause] = []
        volumes: set[str] = set()
        for i, vol in enumerate(spec.get("volumes") or []):
            f = f"spec.volumes[{i}].name"
            out += v.dns1123_label(f, vol.get("name"))
            if vol.get("name") in volumes:
                out.append(duplicate(f, vol["name"]))
            volumes.add(vol.get("name"))
        names: set[str] = set()
        if not spec.get("containers"):
            out.append(required("spec.containers"))
        for i, c in enumerate(spec.get("initContainers") or []):
            out += _validate_container(c, f"spec.initContainers[{i}]", volumes, names)
        for i, c in enumerate(spec.get("containers") or []):
            out += _validate_container(c, f"spec.containers[{i}]", volumes, names)
        out += _validate_ephemeral(spec, volumes, names)
        if spec.get("restartPolicy") not in RESTART_POLICIES:
            out.append(not_supported("spec.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES))
        if spec.get("dnsPolicy") not in DNS_POLICIES:
            out.append(not_supported("spec.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES))
        tg = spec.get("terminationGracePeriodSeconds")
        if isinstance(tg, int) and tg < 0:
            out.append(invalid("spec.terminationGracePeriodSeconds", tg, "must be greater than or equal to 0"))
        ad = spec.get("activeDeadlineSeconds")
        if ad is not None and (not isinstance(ad, int) or ad <= 0):
            out.append(invalid("spec.activeDeadlineSeconds", ad, "must be between 1 and 2147483647, inclusive"))
        if spec.get("nodeName"):
            out += v.dns1123_subdomain("spec.nodeName", spec["nodeName"])
        out += v.labels("spec.nodeSelector", spec.get("nodeSelector"))
        return out

    def validate_create(self, obj: dict[str, Any]) -> list[Cause]:
        out = self.validate(obj)
        if (obj.get("spec") or {}).get("ephemeralContainers"):
            out.append(forbidden("spec.ephemeralContainers", "cannot be set on create"))
        return out

    def prepare_subresource_update(self, subresource: str, new: dict[str, Any], old: dict[str, Any]) -> None:
        """pods/ephemeralcontainers: only spec.ephemeralContainers is taken from the request (so
        `kubectl debug` cannot change anything else of a running pod), defaulted like containers."""
        spec = new.get("spec")
        ecs = spec.get("ephemeralContainers") if isinstance(spec, dict) else None
        super().prepare_subresource_update(subresource, new, old)
        if subresource != "ephemeralcontainers":
            return
        new["spec"] = {k: val for k, val in (old.get("spec") or {}).items() if k != "ephemeralContainers"}
        if ecs:
            for c in ecs if isinstance(ecs, list) else []:
                _default_container(c)
            new["spec"]["ephemeralContainers"] = ecs

    def validate_subresource_update(self, subresource: str, new: dict[str, Any],
                                    old: dict[str, Any]) -> list[Cause]:
        if subresource != "ephemeralcontainers":
            return super().validate_subresource_update(subresource, new, old)
        if MIRROR_ANNOTATION in (_m(old).get("annotations") or {}):
            return [forbidden("", STATIC_EPHEMERAL_MSG)]
        return self.validate(new) + _ephemeral_changes(new, old)

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
        out = self.validate(new)
        a, b = json.loads(json.dumps(new.get("spec") or {})), json.loads(json.dumps(old.get("spec") or {}))
        for spec in (a, b):
            for key in ("containers", "initContainers"):
                for c in spec.get(key) or []:
                    c.pop("image", None)
            spec.pop("activeDeadlineSeconds", None)
            spec.pop("terminationGracePeriodSeconds", None)
        old_tol = b.pop("tolerations", None) or []
        new_tol = a.pop("tolerations", None) or []
        if a != b or any(t not in new_tol for t in old_tol):
            out.append(forbidden("spec", POD_MUTABLE_MSG))
        return out

    async def grace_period(self, obj: dict[str, Any], requested: int | None, registry: Registry) -> int:
        """Bound, running pods wait for their node agent; the rest go now (like PodGC for unknown nodes)."""
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        grace = requested if requested is not None else spec.get("terminationGracePeriodSeconds", 30)
        if grace is None or grace <= 0:
            return 0
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if not await registry.exists(NODE, "", spec["nodeName"]):
            return 0
        return int(grace)

    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN,
                column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
                column("Status", description="The aggregate status of the containers in this pod."),
                column("Restarts", description="The number of times the containers in this pod have been "
                                               "restarted and when the last container in this pod has restarted."),
                AGE_COLUMN,
                column("IP", 1, description="IP address allocated to the pod. Routable at least within the cluster."),
                column("Node", 1, description="Name of the Node the pod is assigned to."),
                column("Nominated Node", 1, description="Name of the node the pod is nominated to."),
                column("Readiness Gates", 1, description="Pod readiness gates.")]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        reason, ready, total, restarts, ago = _pod_status_reason(obj)
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        gates = spec.get("readinessGates") or []
        if gates:
            conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            gates_cell = f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"
        else:
            gates_cell = "<none>"
        return [_m(obj)["name"], f"{ready}/{total}", reason, f"{restarts} ({ago} ago)" if ago else restarts,
                age(obj, now), status.get("podIP") or "<none>", spec.get("nodeName") or "<none>",
                status.get("nominatedNodeName") or "<none>", gates_cell]

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, _m(obj)
        return {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
                "spec.nodeName": spec.get("nodeName", ""), "spec.restartPolicy": spec.get("restartPolicy", ""),
                "spec.schedulerName": spec.get("schedulerName", ""),
                "spec.serviceAccountName": spec.get("serviceAccountName", ""),
                "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
                "status.phase": status.get("phase", ""), "status.podIP": status.get("podIP", ""),
                "status.nominatedNodeName": status.get("nominatedNodeName", "")}


# ---------------------------------------------------------------- Node

TAINT_EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeStrategy(Strategy):
    kind, resource, singular = "Node", "nodes", "node"
    namespaced = False
    short_names = ("no",)
    subresources = ("status",)
    status_split = True
    schema = {
        "spec": {"podCIDR": S, "podCIDRs": L(S), "providerID": S, "unschedulable": B,
                 "taints": L({"key": S, "value": S, "effect": S, "timeAdded": T}), "configSource": ANY,
                 "externalID": S},
        "status": {"capacity": M(Q), "allocatable": M(Q), "phase": S, "conditions": L(CONDITION),
                   "addresses": L({"type": S, "address": S}),
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": I}},
                   "nodeInfo": M(S), "images": L({"names": L(S), "sizeBytes": I}), "volumesInUse": L(S),
                   "volumesAttached": L(ANY), "config": ANY, "runtimeHandlers": L(ANY), "features": ANY,
                   "declaredFeatures": L(S)},
    }
    field_selectors = frozenset({"metadata.name", "spec.unschedulable"})

    def prepare_create(self, obj: dict[str, Any]) -> None:
        obj.setdefault("spec", {})
        if not isinstance(obj.get("status"), dict):
            obj["status"] = {}
        st = obj["status"]
        st.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 0}})
        st.setdefault("nodeInfo", {k: "" for k in ("machineID", "systemUUID", "bootID", "kernelVersion",
                                                   "osImage", "containerRuntimeVersion", "kubeletVersion",
                                                   "kubeProxyVersion", "operatingSystem", "architecture")})

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        out: list[Cause] = []
        spec = obj.get("spec") or {}
        for i, t in enumerate(spec.get("taints") or []):
            out += v.qualified_name(f"spec.taints[{i}].key", t.get("key") or "") if t.get("key") else [
                required(f"spec.taints[{i}].key")]
            if t.get("effect") not in TAINT_EFFECTS:
                out.append(not_supported(f"spec.taints[{i}].effect", t.get("effect"), TAINT_EFFECTS))
        for section in ("capacity", "allocatable"):
            for rname, qty in ((obj.get("status") or {}).get(section) or {}).items():
                if v.parse_quantity(qty) is None:
                    out.append(invalid(f"status.{section}[{rname}]", qty, v.QTY_MSG))
        return out

    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN, column("Status", description="The status of the node"),
                column("Roles", description="The roles of the node"), AGE_COLUMN,
                column("Version", description="Kubelet Version reported by the node."),
                column("Internal-IP", 1, description="List of internal IPs (if any)."),
                column("External-IP", 1, description="List of external IPs (if any)."),
                column("OS-Image", 1, description="OS image reported by the node."),
                column("Kernel-Version", 1, description="Kernel version reported by the node."),
                column("Container-Runtime", 1, description="Container runtime reported by the node.")]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        status, spec = obj.get("status") or {}, obj.get("spec") or {}
        ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        state = {"True": "Ready", "False": "NotReady"}.get(ready or "", "Unknown")
        if spec.get("unschedulable"):
            state += ",SchedulingDisabled"
        roles = sorted(k.split("/", 1)[1] for k in (_m(obj).get("labels") or {})
                       if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1])
        addrs = status.get("addresses") or []
        info = status.get("nodeInfo") or {}

        def ips(kind: str) -> str:
            found = [a.get("address", "") for a in addrs if a.get("type") == kind]
            return ",".join(found) if found else "<none>"

        return [_m(obj)["name"], state, ",".join(roles) or "<none>", age(obj, now), info.get("kubeletVersion", ""),
                ips("InternalIP"), ips("ExternalIP"), info.get("osImage") or "<unknown>",
                info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"metadata.name": _m(obj).get("name", ""),
                "spec.unschedulable": "true" if (obj.get("spec") or {}).get("unschedulable") else "false"}


# ---------------------------------------------------------------- Lease

class LeaseStrategy(Strategy):
    group, kind, resource, singular = "coordination.k8s.io", "Lease", "leases", "lease"
    schema = {"spec": {"holderIdentity": S, "leaseDurationSeconds": I, "acquireTime": T, "renewTime": T,
                       "leaseTransitions": I, "strategy": S, "preferredHolder": S}}

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        spec = obj.get("spec") or {}
        d = spec.get("leaseDurationSeconds")
        if d is not None and (not isinstance(d, int) or d <= 0):
            return [invalid("spec.leaseDurationSeconds", d, "must be greater than 0")]
        return []

    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN, column("Holder", description="The holder of the lease"), AGE_COLUMN]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        return [_m(obj)["name"], (obj.get("spec") or {}).get("holderIdentity", ""), age(obj, now)]


# ---------------------------------------------------------------- Event (stored as core v1)

OBJECT_REF = {"kind": S, "namespace": S, "name": S, "uid": S, "apiVersion": S, "resourceVersion": S,
              "fieldPath": S}
EVENT_FIELDS = frozenset({"metadata.name", "metadata.namespace", "involvedObject.kind",
                          "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
                          "involvedObject.apiVersion", "involvedObject.resourceVersion",
                          "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"})


def _event_fields(obj: dict[str, Any]) -> dict[str, str]:
    io = obj.get("involvedObject") or {}
    out = {f"involvedObject.{k}": str(io.get(k, "")) for k in ("kind", "namespace", "name", "uid", "apiVersion",
                                                                "resourceVersion", "fieldPath")}
    out.update({"metadata.name": _m(obj).get("name", ""), "metadata.namespace": _m(obj).get("namespace", ""),
                "reason": obj.get("reason", ""), "reportingComponent": obj.get("reportingComponent", ""),
                "source": (obj.get("source") or {}).get("component", ""), "type": obj.get("type", "")})
    return out


def _event_row(obj: dict[str, Any], now: float) -> list[Any]:
    meta = _m(obj)
    last = parse_time(obj.get("lastTimestamp")) or parse_time(obj.get("eventTime")) or parse_time(
        meta.get("creationTimestamp"))
    first = parse_time(obj.get("firstTimestamp")) or parse_time(obj.get("eventTime")) or parse_time(
        meta.get("creationTimestamp"))
    io = obj.get("involvedObject") or {}
    src = obj.get("source") or {}
    source = src.get("component") or obj.get("reportingComponent") or ""
    if src.get("host"):
        source += ", " + src["host"]
    return [human_duration(now - last) if last else "<unknown>", obj.get("type", ""), obj.get("reason", ""),
            f"{str(io.get('kind', '')).lower()}/{io.get('name', '')}", io.get("fieldPath", ""), source,
            (obj.get("message") or "").strip(), human_duration(now - first) if first else "<unknown>",
            obj.get("count") or 1, meta.get("name", "")]


def _event_columns() -> list[dict[str, Any]]:
    return [column("Last Seen", description="Time since the event was last seen"), column("Type"),
            column("Reason"), column("Object"), column("Subobject", 1), column("Source", 1),
            column("Message"), column("First Seen", 1), column("Count", 1),
            {**NAME_COLUMN, "priority": 1}]


class EventStrategy(Strategy):
    kind, resource, singular = "Event", "events", "event"
    short_names = ("ev",)
    schema = {"involvedObject": OBJECT_REF, "reason": S, "message": S,
              "source": {"component": S, "host": S}, "firstTimestamp": T, "lastTimestamp": T, "count": I,
              "type": S, "eventTime": T, "series": {"count": I, "lastObservedTime": T},
              "action": S, "related": OBJECT_REF, "reportingComponent": S, "reportingInstance": S}
    field_selectors = EVENT_FIELDS

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        io = obj.get("involvedObject") or {}
        ns = _m(obj).get("namespace", "")
        if io.get("namespace") and io["namespace"] != ns:
            return [invalid("involvedObject.namespace", io["namespace"], "does not match event.namespace")]
        return []

    def columns(self) -> list[dict[str, Any]]:
        return _event_columns()

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        return _event_row(obj, now)

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return _event_fields(obj)


# events.k8s.io/v1 field name -> core v1 field name
_EV_MAP = {"regarding": "involvedObject", "note": "message", "deprecatedSource": "source",
           "deprecatedFirstTimestamp": "firstTimestamp", "deprecatedLastTimestamp": "lastTimestamp",
           "deprecatedCount": "count", "reportingController": "reportingComponent"}
_EV_BACK = {b: a for a, b in _EV_MAP.items()}


class EventsV1Strategy(EventStrategy):
    """events.k8s.io/v1 Event: the same stored objects, with the newer field names."""

    group = "events.k8s.io"
    storage_resource = "events"
    schema = {"regarding": OBJECT_REF, "related": OBJECT_REF, "note": S, "reason": S, "type": S,
              "eventTime": T, "series": {"count": I, "lastObservedTime": T}, "action": S,
              "reportingController": S, "reportingInstance": S, "deprecatedSource": {"component": S, "host": S},
              "deprecatedFirstTimestamp": T, "deprecatedLastTimestamp": T, "deprecatedCount": I}

    def to_storage(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = {_EV_MAP.get(k, k): val for k, val in obj.items()}
        out["apiVersion"], out["kind"] = "v1", "Event"
        return out

    def from_storage(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = {_EV_BACK.get(k, k): val for k, val in obj.items()}
        out["apiVersion"], out["kind"] = "events.k8s.io/v1", "Event"
        return out

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        return _event_row(self.to_storage(obj), now)

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return _event_fields(self.to_storage(obj))


# ---------------------------------------------------------------- ConfigMap, Secret

MAX_CONFIG_SIZE = 1024 * 1024


def _immutable(new: dict[str, Any], old: dict[str, Any], fields: tuple[str, ...]) -> list[Cause]:
    out: list[Cause] = []
    if old.get("immutable"):
        if not new.get("immutable"):
            out.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        for f in fields:
            if (new.get(f) or {}) != (old.get(f) or {}):
                out.append(forbidden(f, "field is immutable when `immutable` is set"))
    return out


class ConfigMapStrategy(Strategy):
    kind, resource, singular = "ConfigMap", "configmaps", "configmap"
    short_names = ("cm",)
    schema = {"data": M(S), "binaryData": M(S), "immutable": B}

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        out: list[Cause] = []
        size = 0
        data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
        for k, val in data.items():
            out += v.config_key(f"data[{k}]", k)
            size += len(k) + len(val or "")
        for k, val in binary.items():
            out += v.config_key(f"binaryData[{k}]", k)
            if k in data:
                out.append(invalid(f"binaryData[{k}]", k, "duplicate of key present in data"))
            try:
                size += len(k) + len(base64.b64decode(val or "", validate=True))
            except (binascii.Error, ValueError):
                out.append(invalid(f"binaryData[{k}]", "<binary>", "illegal base64 data"))
        if size > MAX_CONFIG_SIZE:
            out.append(too_long_data(MAX_CONFIG_SIZE))
        return out

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
        return self.validate(new) + _immutable(new, old, ("data", "binaryData"))

    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN, column("Data", type_="integer"), AGE_COLUMN]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        return [_m(obj)["name"], len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age(obj, now)]


def too_long_data(limit: int) -> Cause:
    return Cause("FieldValueTooLong", "data", f"Too long: must have at most {limit} bytes")


class SecretStrategy(Strategy):
    kind, resource, singular = "Secret", "secrets", "secret"
    schema = {"data": M(S), "stringData": M(S), "type": S, "immutable": B}
    field_selectors = frozenset({"metadata.name", "metadata.namespace", "type"})

    def _fold(self, obj: dict[str, Any]) -> None:
        """stringData is write-only: merged into data as base64, then dropped."""
        sd = obj.pop("stringData", None)
        if isinstance(sd, dict) and sd:
            data: dict[str, Any] = obj["data"] if isinstance(obj.get("data"), dict) else {}
            for k, val in sd.items():
                data[k] = base64.b64encode(str(val).encode()).decode()
            obj["data"] = data

    def prepare_create(self, obj: dict[str, Any]) -> None:
        self._fold(obj)
        obj.setdefault("type", "Opaque")

    def prepare_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        self._fold(new)
        new.setdefault("type", old.get("type", "Opaque"))

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        out: list[Cause] = []
        size = 0
        for k, val in (obj.get("data") or {}).items():
            out += v.config_key(f"data[{k}]", k)
            try:
                size += len(base64.b64decode(val or "", validate=True))
            except (binascii.Error, ValueError):
                out.append(invalid(f"data[{k}]", "<secret contents redacted>", "illegal base64 data"))
        if size > MAX_CONFIG_SIZE:
            out.append(too_long_data(MAX_CONFIG_SIZE))
        return out

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
        out = self.validate(new) + _immutable(new, old, ("data",))
        if new.get("type") != old.get("type"):
            out.append(invalid("type", new.get("type"), "field is immutable"))
        return out

    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN, column("Type"), column("Data", type_="integer"), AGE_COLUMN]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        return [_m(obj)["name"], obj.get("type", ""), len(obj.get("data") or {}), age(obj, now)]

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        return {**super().fields(obj), "type": obj.get("type", "")}


NAMESPACE = NamespaceStrategy()
POD = PodStrategy()
NODE = NodeStrategy()
LEASE = LeaseStrategy()
EVENT = EventStrategy()
EVENT_V1 = EventsV1Strategy()
CONFIGMAP = ConfigMapStrategy()
SECRET = SecretStrategy()

from .certificates import CSR  # noqa: E402  (its own module: the x509 rules are long)

ALL: tuple[Strategy, ...] = (NAMESPACE, POD, NODE, LEASE, EVENT, EVENT_V1, CONFIGMAP, SECRET, CSR)
