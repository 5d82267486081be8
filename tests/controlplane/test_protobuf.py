"""Protobuf request bodies: kubectl's generator commands (create namespace|configmap|secret), the
Pods of `kubectl debug` and the CertificateSigningRequest of `kubectl certificate approve|deny`."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import pytest
import requests

from kubeletpy.controlplane import protobuf as pb

from .conftest import ControlPlane

PROTOBUF = "application/vnd.kubernetes.protobuf"

# `kubectl.1.33 create secret generic s1 --from-literal=a=b --from-literal=c=d` (from its -v=9 log)
KUBECTL_SECRET = bytes.fromhex(
    "6b 38 73 00 0a 0c 0a 02 76 31 12 06 53 65 63 72 65 74 12 26 0a 12 0a 02 73 31 12 00 1a 00 22 00"
    "2a 00 32 00 38 00 42 00 12 06 0a 01 61 12 01 62 12 06 0a 01 63 12 01 64 1a 00 1a 00 22 00")


def test_decode_what_kubectl_sends() -> None:
    assert pb.decode_object(KUBECTL_SECRET) == {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
                                                "data": {"a": "Yg==", "c": "ZA=="}}


def test_round_trip_of_every_field() -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": "n", "generateName": "g-", "labels": {"a": "1", "b": ""},
                       "annotations": {"x": "y"}, "finalizers": ["f1", "f2"], "generation": 3,
                       "creationTimestamp": "2026-01-02T03:04:05Z",
                       "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u",
                                            "controller": True, "blockOwnerDeletion": False}],
                       "managedFields": [{"manager": "m", "operation": "Update", "apiVersion": "v1",
                                          "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                                          "fieldsV1": {"f:metadata": {}}}]},
          "spec": {"finalizers": ["kubernetes"]},
          "status": {"phase": "Active", "conditions": [{"type": "T", "status": "True", "reason": "R"}]}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"},
          "data": {"k": "v\nw", "e": ""}, "binaryData": {"b": base64.b64encode(b"\x00\xff").decode()},
          "immutable": False}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "kubernetes.io/tls",
              "data": {"tls.crt": "YQ=="}, "stringData": {"p": "q"}, "immutable": True}
    for obj in (ns, cm, secret):
        assert pb.decode_object(pb.encode_object(obj)) == obj


def test_malformed_and_unsupported() -> None:
    with pytest.raises(pb.NotEnvelope):
        pb.decode_object(b"{}")
    with pytest.raises(pb.DecodeError):
        pb.decode_object(b"k8s\x00\x0a\x05")
    with pytest.raises(pb.DecodeError):
        pb.decode_object(KUBECTL_SECRET[:-9])
    deployment = pb.MAGIC + pb._ld(1, pb._ld(1, b"apps/v1") + pb._ld(2, b"Deployment")) + pb._ld(2, b"")
    with pytest.raises(pb.UnsupportedKind):
        pb.decode_object(deployment)


def test_http(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    body = pb.encode_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raw"},
                             "data": {"k": "v"}})
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/configmaps", data=body,
                 headers={"Content-Type": PROTOBUF, "Accept": f"{PROTOBUF},application/json"})
    assert r.status_code == 201 and r.headers["Content-Type"] == "application/json", r.text
    assert r.json()["data"] == {"k": "v"} and r.json()["metadata"]["namespace"] == ns
    event = pb.MAGIC + pb._ld(1, pb._ld(1, b"v1") + pb._ld(2, b"Event")) + pb._ld(2, b"")
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/events", data=event, headers={"Content-Type": PROTOBUF})
    assert r.status_code == 415
    kinds = ", ".join(sorted(kind for _, kind in pb.KINDS))  # the message lists what KINDS holds
    assert kinds == "CertificateSigningRequest, ConfigMap, Namespace, Pod, Secret"
    assert f"accepted for {kinds} only, not v1/Event" in r.json()["message"]
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/configmaps", data=b"k8s\x00\x0a\xff",
                 headers={"Content-Type": PROTOBUF})
    assert r.status_code == 400 and "protobuf" in r.json()["message"]
    r = api.patch(f"{cp.url}/api/v1/namespaces/{ns}/configmaps/raw", data=body, headers={"Content-Type": PROTOBUF})
    assert r.status_code == 415
    # the kind must still match the URL
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/secrets", data=body, headers={"Content-Type": PROTOBUF})
    assert r.status_code >= 400


@pytest.mark.parametrize("version", [27, 33, None])  # 1.27 sends JSON; 1.32 (the dispatcher), 1.33 protobuf
def test_kubectl_generators(cp: ControlPlane, ns: str, version: int | None) -> None:
    tag = str(version or "d")
    r = cp.kubectl("create", "namespace", f"gen-{ns[:40]}-{tag}", version=version, check=True)
    assert r.stdout.strip() == f"namespace/gen-{ns[:40]}-{tag} created"
    try:
        got = json.loads(cp.kubectl("get", "ns", f"gen-{ns[:40]}-{tag}", "-o", "json", check=True).stdout)
        assert got["status"]["phase"] == "Active" and got["spec"]["finalizers"] == ["kubernetes"]
        r = cp.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=a=1", "--from-literal=b=two words",
                       version=version, check=True)
        assert r.stdout.strip() == "configmap/cfg created"
        got = json.loads(cp.kubectl("get", "cm", "cfg", "-n", ns, "-o", "json", check=True).stdout)
        assert got["data"] == {"a": "1", "b": "two words"}
        r = cp.kubectl("create", "secret", "generic", "sec", "-n", ns, "--from-literal=user=admin",
                       "--from-literal=pw=s3cr3t", version=version, check=True)
        assert r.stdout.strip() == "secret/sec created"
        got = json.loads(cp.kubectl("get", "secret", "sec", "-n", ns, "-o", "json", check=True).stdout)
        assert got["type"] == "Opaque"
        assert got["data"] == {"user": base64.b64encode(b"admin").decode(), "pw": base64.b64encode(b"s3cr3t").decode()}
        r = cp.kubectl("create", "secret", "docker-registry", "pull", "-n", ns, "--docker-server=r.io",
                       "--docker-username=u", "--docker-password=p", version=version, check=True)
        got = json.loads(cp.kubectl("get", "secret", "pull", "-n", ns, "-o", "json", check=True).stdout)
        cfg = json.loads(base64.b64decode(got["data"][".dockerconfigjson"]))
        assert got["type"] == "kubernetes.io/dockerconfigjson" and cfg["auths"]["r.io"]["username"] == "u"
        r = cp.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=a=1", version=version)
        assert r.returncode == 1 and 'configmaps "cfg" already exists' in r.stderr
        r = cp.kubectl("create", "configmap", "dry", "-n", ns, "--from-literal=a=1", "--dry-run=server",
                       version=version, check=True)
        assert "(server dry run)" in r.stdout
        assert cp.kubectl("get", "cm", "dry", "-n", ns).returncode == 1
        r = cp.kubectl("run", "runner", "-n", ns, "--image=busybox:1.36", version=version, check=True)
        assert r.stdout.strip() == "pod/runner created"
    finally:
        cp.kubectl("delete", "ns", f"gen-{ns[:40]}-{tag}", "--wait=false")


# -- v1 Pod and certificates.k8s.io/v1 CertificateSigningRequest

PROBE = {"httpGet": {"path": "/healthz", "port": "http", "host": "h", "scheme": "HTTPS",
                     "httpHeaders": [{"name": "X-A", "value": "b"}]},
         "initialDelaySeconds": 1, "timeoutSeconds": 2, "periodSeconds": 3, "successThreshold": 1,
         "failureThreshold": 4, "terminationGracePeriodSeconds": 0}
CONTAINER = {
    "name": "main", "image": "busybox:1.36", "command": ["sh", "-c"], "args": ["sleep 1"], "workingDir": "/w",
    "ports": [{"name": "http", "containerPort": 8080, "hostPort": 80, "protocol": "TCP", "hostIP": "1.2.3.4"}],
    "envFrom": [{"prefix": "P_", "configMapRef": {"name": "cm", "optional": False}},
                {"secretRef": {"name": "s", "optional": True}}],
    "env": [{"name": "A", "value": "1"}, {"name": "EMPTY"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"containerName": "main", "resource": "limits.memory",
                                                               "divisor": "1Mi"}}},
            {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": False}}},
            {"name": "SEC", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "0", "memory": "64Mi"},
                  "claims": [{"name": "gpu", "request": "r"}]},
    "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch", "readOnly": True, "subPath": "a",
                      "mountPropagation": "HostToContainer", "recursiveReadOnly": "Disabled"},
                     {"name": "cfg", "mountPath": "/cfg", "subPathExpr": "$(NODE)"}],
    "volumeDevices": [{"name": "blk", "devicePath": "/dev/xvda"}],
    "livenessProbe": PROBE,
    "readinessProbe": {"exec": {"command": ["cat", "/ready"]}, "periodSeconds": 5},
    "startupProbe": {"tcpSocket": {"port": 8080}},
    "lifecycle": {"postStart": {"exec": {"command": ["touch", "/started"]}},
                  "preStop": {"sleep": {"seconds": 5}}},
    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "FallbackToLogsOnError",
    "imagePullPolicy": "IfNotPresent",
    "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "privileged": False,
                        "seLinuxOptions": {"user": "u", "role": "r", "type": "t", "level": "s0"},
                        "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": False,
                        "allowPrivilegeEscalation": False, "procMount": "Default",
                        "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
                        "appArmorProfile": {"type": "RuntimeDefault"}},
    "stdin": True, "stdinOnce": True, "tty": True,
}
POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "p", "namespace": "n", "labels": {"app": "p"}, "annotations": {"a": ""},
                 "deletionGracePeriodSeconds": 0},
    "spec": {
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "root", "hostPath": {"path": "/", "type": ""}},
            {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "k", "path": "p", "mode": 0}],
                                          "defaultMode": 0o644, "optional": False}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 0}},
            {"name": "dapi", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "cpu", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu",
                                                     "divisor": "1m"}}]}},
            {"name": "proj", "projected": {"defaultMode": 0o440, "sources": [
                {"configMap": {"name": "cm", "items": [{"key": "k", "path": "k"}]}},
                {"secret": {"name": "s", "optional": True}},
                {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"serviceAccountToken": {"audience": "api", "expirationSeconds": 3600, "path": "token"}}]}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}},
            {"name": "eph", "ephemeral": {"volumeClaimTemplate": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                         "resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Block"}}}},
            {"name": "blk", "csi": {"driver": "d", "readOnly": False, "volumeAttributes": {"k": "v"}}},
            {"name": "nfs", "nfs": {"server": "s", "path": "/x"}},
        ],
        "initContainers": [{"name": "init", "image": "busybox", "restartPolicy": "Always"}],
        "containers": [CONTAINER, {"name": "side", "image": "busybox"}],
        "ephemeralContainers": [{"name": "debugger", "image": "busybox", "stdin": True,
                                 "targetContainerName": "main"}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 0, "activeDeadlineSeconds": 0,
        "dnsPolicy": "None", "nodeSelector": {"disk": "ssd"}, "serviceAccountName": "sa", "serviceAccount": "sa",
        "automountServiceAccountToken": False, "nodeName": "n1", "hostNetwork": True, "hostPID": True,
        "hostIPC": True, "shareProcessNamespace": False,
        "securityContext": {"runAsUser": 0, "runAsGroup": 1000, "runAsNonRoot": False, "fsGroup": 0,
                            "supplementalGroups": [0, 4, 2147483647], "sysctls": [{"name": "net.x", "value": "1"}],
                            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
                            "supplementalGroupsPolicy": "Strict"},
        "imagePullSecrets": [{"name": "pull"}], "hostname": "h", "subdomain": "sub",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "k", "operator": "In", "values": ["a", "b"]}],
                     "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["x"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}}]},
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {}, "topologyKey": "zone", "namespaces": ["a"],
                 "namespaceSelector": {"matchLabels": {"team": "x"}}, "matchLabelKeys": ["pod-template-hash"]}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {
                    "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["p"]}]},
                    "topologyKey": "kubernetes.io/hostname", "mismatchLabelKeys": ["b"]}}]}},
        "schedulerName": "default-scheduler",
        "tolerations": [{"operator": "Exists"},
                        {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute",
                         "tolerationSeconds": 0}],
        "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a", "b"]}], "priorityClassName": "high",
        "priority": 0, "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["s"],
                                     "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
        "readinessGates": [{"conditionType": "x/ready"}], "runtimeClassName": "rc", "enableServiceLinks": False,
        "preemptionPolicy": "Never", "overhead": {"cpu": "10m"},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                       "labelSelector": {"matchLabels": {"app": "p"}}, "minDomains": 1,
                                       "nodeAffinityPolicy": "Honor", "matchLabelKeys": ["v"]}],
        "setHostnameAsFQDN": False, "os": {"name": "linux"}, "hostUsers": False,
        "schedulingGates": [{"name": "gate"}],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "t"}],
        "resources": {"limits": {"cpu": "1"}},
    },
    "status": {"phase": "Running", "podIP": "10.0.0.5", "startTime": "2026-01-02T03:04:05Z",
               "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:05Z"}],
               "containerStatuses": [{"name": "main", "ready": True, "restartCount": 2, "image": "busybox",
                                      "imageID": "sha256:x", "started": False,
                                      "state": {"running": {"startedAt": "2026-01-02T03:04:05Z"}},
                                      "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]},
}
CSR = {
    "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
    "metadata": {"name": "node-csr-1"},
    "spec": {"request": base64.b64encode(b"-----BEGIN CERTIFICATE REQUEST-----\n\x00\xff").decode(),
             "signerName": "kubernetes.io/kube-apiserver-client-kubelet", "expirationSeconds": 0,
             "usages": ["digital signature", "client auth"], "username": "system:node:n1", "uid": "u-1",
             "groups": ["system:nodes", "system:authenticated"],
             "extra": {"scopes": ["a", "b"], "empty": []}},
    "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove",
                               "message": "ok", "lastUpdateTime": "2026-01-02T03:04:05Z",
                               "lastTransitionTime": "2026-01-02T03:04:06Z"}],
               "certificate": base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()},
}


def go_marshal(obj: dict[str, Any], schema: pb.Schema) -> bytes:
    """`obj` as Go's generated Marshal writes it: every non-pointer field, set or not (zero values
    included: "", 0, false, an empty struct, a zero Time, Quantity "0", IntOrString 0), and pointer,
    repeated and map fields only when set -- the bytes a real client sends, which `pb.encode_message`
    (it writes only what `obj` has) does not reproduce."""
    out = b""
    for num, (name, typ, repeated) in sorted(schema.items()):
        val = obj.get(name)
        if isinstance(typ, pb.Inline):
            out += pb._ld(num, go_marshal(obj, typ.schema))
        elif isinstance(typ, (dict, pb.Ptr)):
            sub = typ if isinstance(typ, dict) else typ.schema
            if repeated or isinstance(typ, pb.Ptr):  # written only when set
                out += b"".join(pb._ld(num, go_marshal(v, sub)) for v in (val or [] if repeated else [val])
                                if v is not None)
            else:
                out += pb._ld(num, go_marshal(val or {}, sub))
        elif repeated or typ in pb.MAPS or typ in ("bytes", pb.FIELDS_V1) or typ.endswith("_ptr"):
            if val is not None:
                out += b"".join(pb._encode_value(num, typ, v) for v in (val if repeated else [val]))
        elif typ == "time":
            out += pb._ld(num, b"") if val is None else pb._encode_value(num, typ, val)
        else:
            zero = {"string": "", "int": 0, "bool": False, "quantity": "0", "intorstr": 0}[typ]
            out += pb._encode_value(num, typ, zero if val is None else val)
    return out


def go_object(obj: dict[str, Any]) -> bytes:
    tm = pb._ld(1, obj["apiVersion"].encode()) + pb._ld(2, obj["kind"].encode())
    raw = go_marshal(obj, pb.KINDS[(obj["apiVersion"], obj["kind"])])
    return pb.MAGIC + pb._ld(1, tm) + pb._ld(2, raw) + pb._ld(3, b"") + pb._ld(4, b"")


def test_round_trip_pod_and_csr() -> None:
    for obj in (POD, CSR):
        assert pb.decode_object(pb.encode_object(obj)) == obj
        # as a Go client writes it: the zero values of every unset non-pointer field come out again
        assert pb.decode_object(go_object(obj)) == obj


def test_pointer_and_non_pointer_zero_values() -> None:
    """Go writes `stdin=false` and `hostNetwork=false` always, `privileged=false` and `runAsUser=0`
    only when set: the JSON must drop the first kind and keep the second."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "z"}, "spec": {
        "containers": [{"name": "c", "image": "i", "stdin": False, "tty": False, "workingDir": "",
                        "securityContext": {"privileged": False, "runAsUser": 0, "runAsNonRoot": False}}],
        "volumes": [{"name": "v", "emptyDir": {}}, {"name": "o", "secret": {"secretName": "s", "optional": False,
                                                                             "defaultMode": 0}}],
        "hostNetwork": False, "hostPID": False, "hostIPC": False, "nodeName": "",
        "terminationGracePeriodSeconds": 0, "activeDeadlineSeconds": 0, "priority": 0,
        "automountServiceAccountToken": False, "enableServiceLinks": False, "shareProcessNamespace": False,
        "setHostnameAsFQDN": False, "hostUsers": False, "securityContext": {},
        "tolerations": [{"key": "k", "operator": "Equal", "value": "", "tolerationSeconds": 0}]}}
    got = pb.decode_object(go_object(pod))
    assert got == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "z"}, "spec": {
        "containers": [{"name": "c", "image": "i",
                        "securityContext": {"privileged": False, "runAsUser": 0, "runAsNonRoot": False}}],
        "volumes": [{"name": "v", "emptyDir": {}}, {"name": "o", "secret": {"secretName": "s", "optional": False,
                                                                             "defaultMode": 0}}],
        "terminationGracePeriodSeconds": 0, "activeDeadlineSeconds": 0, "priority": 0,
        "automountServiceAccountToken": False, "enableServiceLinks": False, "shareProcessNamespace": False,
        "setHostnameAsFQDN": False, "hostUsers": False, "securityContext": {},
        "tolerations": [{"key": "k", "operator": "Equal", "tolerationSeconds": 0}]}}
    # the ports and divisors a Go client always writes: IntOrString 0 and Quantity "0" are kept
    probe = {"name": "c", "livenessProbe": {"tcpSocket": {}},
             "env": [{"name": "E", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]}
    got = pb.decode_object(go_object({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [probe]}}))
    assert got["spec"]["containers"][0] == {
        "name": "c", "livenessProbe": {"tcpSocket": {"port": 0}},
        "env": [{"name": "E", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}}}]}
    # the existing kinds keep their pointer bools too
    assert pb.decode_object(go_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                                       "immutable": False}))["immutable"] is False


def test_packed_repeated_ints() -> None:
    """proto2 repeated int64 is written unpacked by Go, but a reader must accept the packed form."""
    packed = pb._ld(4, b"".join(pb._encode_varint(v) for v in (0, 5, -1)))
    spec = pb._ld(14, packed)
    body = pb.MAGIC + pb._ld(1, pb._ld(1, b"v1") + pb._ld(2, b"Pod")) + pb._ld(2, pb._ld(2, spec))
    assert pb.decode_object(body)["spec"] == {"securityContext": {"supplementalGroups": [0, 5, -1]}}


def _extended(schema: pb.Schema, names: list[str], field: tuple[str, Any, bool]) -> pb.Schema:
    """A copy of `schema` with `field` added as number 99 to the message at `names` (JSON keys)."""
    if not names:
        return {**schema, 99: field}
    out = dict(schema)
    for num, (name, typ, repeated) in schema.items():
        if isinstance(typ, pb.Inline) and any(n == names[0] for n, _, _ in typ.schema.values()):
            out[num] = (name, pb.Inline(_extended(typ.schema, names, field)), repeated)
        elif name == names[0]:
            sub = _extended(typ if isinstance(typ, dict) else typ.schema, names[1:], field)
            out[num] = (name, sub if isinstance(typ, dict) else pb.Ptr(sub), repeated)
    return out


def newer_client(obj: dict[str, Any], path: list[Any], typ: Any = "int_ptr", value: Any = 1) -> bytes:
    """What a client with a newer schema sends: `obj` with one more field, number 99 holding `value`,
    in the message at `path` (JSON keys and list indexes)."""
    obj = copy.deepcopy(obj)
    target = obj
    for key in path:
        target = target[key]
    target["newField"] = value
    schema = _extended(pb.KINDS[(obj["apiVersion"], obj["kind"])], [k for k in path if isinstance(k, str)],
                       ("newField", typ, False))
    tm = pb._ld(1, obj["apiVersion"].encode()) + pb._ld(2, obj["kind"].encode())
    return pb.MAGIC + pb._ld(1, tm) + pb._ld(2, go_marshal(obj, schema))


def test_unknown_fields_are_refused_for_pod_and_csr() -> None:
    for path, where in ((["spec", "containers", 0], "spec.containers[0]"),
                        (["spec", "containers", 1], "spec.containers[1]"),
                        (["spec", "volumes", 0], "spec.volumes[0]"),
                        (["spec", "volumes", 1, "emptyDir"], "spec.volumes[1].emptyDir"),
                        (["spec", "containers", 0, "livenessProbe", "httpGet"],
                         "spec.containers[0].livenessProbe.httpGet"),
                        (["spec", "affinity", "podAffinity"], "spec.affinity.podAffinity"),
                        (["spec", "ephemeralContainers", 0], "spec.ephemeralContainers[0]"),
                        (["spec"], "spec"), (["metadata"], "metadata"), ([], "the object")):
        with pytest.raises(pb.DecodeError, match=rf"^{re.escape(where)}: unknown field 99$"):
            pb.decode_object(newer_client(POD, path))
    with pytest.raises(pb.DecodeError, match=r"^spec: unknown field 99$"):
        pb.decode_object(newer_client(CSR, ["spec"], "string", "x"))
    with pytest.raises(pb.DecodeError, match=r"^status.conditions\[0\]: unknown field 99$"):
        pb.decode_object(newer_client(CSR, ["status", "conditions", 0], "bool", True))
    # a map entry with a field besides key and value
    cpu = pb._ld(1, b"cpu") + pb._ld(2, pb._ld(1, b"1")) + pb._ld(3, b"")
    body = pb._ld(2, pb._ld(2, pb._ld(1, b"c") + pb._ld(8, pb._ld(1, cpu))))
    with pytest.raises(pb.DecodeError, match=r"^spec.containers\[0\].resources.limits: unknown map entry field 3$"):
        pb.decode_object(pb.MAGIC + pb._ld(1, pb._ld(1, b"v1") + pb._ld(2, b"Pod")) + pb._ld(2, body))
    # a wrong wire type is refused with its path too
    with pytest.raises(pb.DecodeError, match=r"^spec.hostNetwork: expected a bool$"):
        pb.decode_object(pb.MAGIC + pb._ld(1, pb._ld(1, b"v1") + pb._ld(2, b"Pod"))
                         + pb._ld(2, pb._ld(2, pb._ld(11, b""))))
    # the existing kinds still skip what they do not know
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
    assert pb.decode_object(newer_client(cm, ["metadata"])) == cm
    assert pb.decode_object(newer_client(cm, [])) == cm


def test_http_pod(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pb"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "stdin": False,
                                     "securityContext": {"privileged": False, "runAsUser": 0}}],
                     "terminationGracePeriodSeconds": 0, "hostNetwork": False}}
    headers = {"Content-Type": PROTOBUF, "Accept": "application/json"}
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods", data=go_object(body), headers=headers)
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert spec["terminationGracePeriodSeconds"] == 0 and "hostNetwork" not in spec
    assert spec["containers"][0]["securityContext"] == {"privileged": False, "runAsUser": 0}
    assert "stdin" not in spec["containers"][0]
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods", headers=headers,
                 data=newer_client({**body, "metadata": {"name": "pb2"}}, ["spec", "containers", 0],
                                   "string", "new"))
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest", r.text
    assert "spec.containers[0]: unknown field 99" in r.json()["message"]
    assert api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/pb2").status_code == 404


def _sent_protobuf(stderr: str, method: str, path: str) -> bool:
    """Whether kubectl's -v=8 log shows `method path` sent with a protobuf Content-Type. 1.32 logs
    `POST https://HOST/PATH` then one header a line; 1.33 `"Request" verb="POST" url="https://HOST/PATH"
    headers=<` then one header a line."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if method in line and (line.rstrip().endswith(path) or f'{path}" headers=' in line):
            return any(f"Content-Type: {PROTOBUF}" in ln for ln in lines[i + 1:i + 8])
    return False


@pytest.mark.parametrize("version", [None, 33])  # the /usr/bin/kubectl dispatcher is 1.32
def test_kubectl_debug_copy_to(cp: ControlPlane, api: requests.Session, ns: str, version: int | None) -> None:
    """`kubectl debug POD --copy-to` (kubectl 1.32 and 1.33) POSTs the copied Pod as protobuf: every field of
    the original comes through, plus the debug container and the shared process namespace."""
    original = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {k: v for k, v in POD["spec"].items()
                         if k in ("restartPolicy", "terminationGracePeriodSeconds", "nodeSelector", "automountServiceAccountToken", "enableServiceLinks",
                                  "tolerations", "affinity", "hostAliases", "dnsConfig", "dnsPolicy",
                                  "readinessGates", "topologySpreadConstraints", "setHostnameAsFQDN")}}
    original["spec"]["volumes"] = [v for v in POD["spec"]["volumes"]
                                   if v["name"] in ("scratch", "mem", "cfg", "sec", "dapi", "proj")]
    main = {k: v for k, v in CONTAINER.items() if k not in ("volumeDevices", "stdin", "stdinOnce", "tty")}
    main["resources"] = {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}
    main["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch", "readOnly": True, "subPath": "a"},
                            {"name": "cfg", "mountPath": "/cfg", "subPathExpr": "$(NODE)"}]
    main["securityContext"] = {**CONTAINER["securityContext"], "capabilities": {"add": ["NET_ADMIN"]}}
    original["spec"]["initContainers"] = [{"name": "init", "image": "busybox", "command": ["true"]}]
    original["spec"]["containers"] = [main]
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods", json=original)
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["spec"]["containers"][0]["securityContext"]["runAsUser"] == 0

    r = cp.kubectl("debug", "web", "-n", ns, "--copy-to=web-copy", "--image=busybox", "--share-processes",
                   "--container=dbg", "--keep-liveness", "--keep-readiness", "--keep-startup",
                   "-v=8", "--", "true", version=version, check=True)
    assert _sent_protobuf(r.stderr, "POST", f"/api/v1/namespaces/{ns}/pods"), r.stderr
    spec = json.loads(cp.kubectl("get", "pod", "web-copy", "-n", ns, "-o", "json", check=True).stdout)["spec"]
    assert spec["shareProcessNamespace"] is True
    assert [c["name"] for c in spec["containers"]] == ["main", "dbg"]
    dbg = spec["containers"][1]
    assert dbg["image"] == "busybox" and dbg["command"] == ["true"] and "stdin" not in dbg
    # the original's spec survives the protobuf trip unchanged, pointer false/0 values included
    want = {**stored["spec"], "shareProcessNamespace": True}
    assert {**spec, "containers": spec["containers"][:1]} == want
    assert spec["automountServiceAccountToken"] is False and spec["terminationGracePeriodSeconds"] == 0
    assert spec["containers"][0]["securityContext"]["privileged"] is False


@pytest.mark.parametrize("version,profile", [(None, "legacy"), (33, "sysadmin")])
def test_kubectl_debug_node(cp: ControlPlane, api: requests.Session, ns: str, version: int | None,
                            profile: str) -> None:
    """`kubectl debug node/NODE` (kubectl 1.32 and 1.33) POSTs a host-namespaces Pod bound to the node
    as protobuf; the sysadmin profile adds a privileged security context."""
    node = f"dbg-{ns}"[:63].rstrip("-")
    r = api.post(f"{cp.url}/api/v1/nodes", json={"metadata": {"name": node,
                                                              "labels": {"kubernetes.io/hostname": node}}})
    assert r.status_code == 201, r.text
    try:
        r = cp.kubectl("debug", f"node/{node}", "-n", ns, "--image=busybox", f"--profile={profile}", "-v=8",
                       "--", "true", version=version, check=True)
        assert _sent_protobuf(r.stderr, "POST", f"/api/v1/namespaces/{ns}/pods"), r.stderr
        pods = json.loads(cp.kubectl("get", "pods", "-n", ns, "-o", "json", check=True).stdout)["items"]
        assert len(pods) == 1 and pods[0]["metadata"]["name"].startswith(f"node-debugger-{node}-")
        spec = pods[0]["spec"]
        assert spec["nodeName"] == node and spec["restartPolicy"] == "Never"
        assert spec["hostPID"] is True and spec["hostNetwork"] is True and spec["hostIPC"] is True
        assert {"operator": "Exists"} in spec["tolerations"]
        [volume] = spec["volumes"]
        assert volume["hostPath"]["path"] == "/"
        [container] = spec["containers"]
        assert container["name"] == "debugger" and container["image"] == "busybox"
        assert container["command"] == ["true"] and "stdin" not in container and "tty" not in container
        if profile == "sysadmin":
            assert container["securityContext"] == {"privileged": True}
        else:
            assert "securityContext" not in container
        assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": "/host"}]
    finally:
        api.delete(f"{cp.url}/api/v1/nodes/{node}")
