"""Protobuf request bodies: kubectl's generator commands (create namespace|configmap|secret)."""

from __future__ import annotations

import base64
import json

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
    pod = pb.MAGIC + pb._ld(1, pb._ld(1, b"v1") + pb._ld(2, b"Pod")) + pb._ld(2, b"")
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods", data=pod, headers={"Content-Type": PROTOBUF})
    assert r.status_code == 415
    assert "accepted for ConfigMap, Namespace, Secret only, not v1/Pod" in r.json()["message"]
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
