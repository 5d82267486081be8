"""Real kubectl against the server: the /usr/bin/kubectl dispatcher and the versioned binaries."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests
import yaml

from .conftest import VERSIONED, ControlPlane

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {name}}}
spec:
  containers:
  - name: main
    image: {image}
    command: [sleep, "3600"]
    ports: [{{containerPort: 80}}]
"""


def manifest(cp: ControlPlane, name: str, ns: str, image: str = "busybox:1.36") -> str:
    path = cp.root / f"{ns}-{name}.yaml"
    path.write_text(POD.format(name=name, ns=ns, image=image))
    return str(path)


def test_version_and_api_resources(cp: ControlPlane) -> None:
    r = cp.kubectl("version", check=True)
    assert "Server Version: v1.32.0" in r.stdout and "WARNING" not in r.stderr
    r = cp.kubectl("api-resources", check=True)
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert {"pods", "nodes", "namespaces", "configmaps", "secrets", "events", "leases",
            "certificatesigningrequests"} <= set(lines)
    assert "po" in lines["pods"] and "coordination.k8s.io/v1" in lines["leases"]
    assert lines["certificatesigningrequests"].split()[1:4] == ["csr", "certificates.k8s.io/v1", "false"]
    r = cp.kubectl("api-versions", check=True)
    assert r.stdout.split() == ["certificates.k8s.io/v1", "coordination.k8s.io/v1", "events.k8s.io/v1", "v1"]


def test_create_get_describe_label_annotate_patch_delete(cp: ControlPlane, ns: str) -> None:
    f = manifest(cp, "demo", ns)
    r = cp.kubectl("create", "-f", f, check=True)
    assert r.stdout.strip() == "pod/demo created"
    r = cp.kubectl("create", "-f", f)
    assert r.returncode == 1 and 'pods "demo" already exists' in r.stderr
    r = cp.kubectl("get", "pods", "-n", ns, check=True)
    assert r.stdout.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert r.stdout.split("\n")[1].split()[:4] == ["demo", "0/1", "Pending", "0"]
    r = cp.kubectl("get", "po", "-n", ns, "-o", "wide", check=True)
    assert r.stdout.split("\n")[0].split()[5:7] == ["IP", "NODE"]
    obj = yaml.safe_load(cp.kubectl("get", "pod", "demo", "-n", ns, "-o", "yaml", check=True).stdout)
    assert obj["kind"] == "Pod" and obj["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"
    obj = json.loads(cp.kubectl("get", "pod", "demo", "-n", ns, "-o", "json", check=True).stdout)
    assert obj["metadata"]["uid"]
    r = cp.kubectl("get", "pods", "-A", check=True)
    assert any(ln.split()[:2] == [ns, "demo"] for ln in r.stdout.splitlines())
    assert cp.kubectl("label", "pod", "demo", "-n", ns, "tier=web", check=True).stdout.strip() == "pod/demo labeled"
    assert "annotated" in cp.kubectl("annotate", "pod", "demo", "-n", ns, "note=hello", check=True).stdout
    r = cp.kubectl("patch", "pod", "demo", "-n", ns, "-p", '{"spec":{"containers":[{"name":"main",'
                                                          '"image":"busybox:1.37"}]}}', check=True)
    assert "patched" in r.stdout
    r = cp.kubectl("patch", "pod", "demo", "-n", ns, "--type=json", "-p",
                   '[{"op":"add","path":"/metadata/labels/j","value":"1"}]', check=True)
    r = cp.kubectl("get", "pods", "-n", ns, "-l", "tier=web,j=1", "--show-labels", check=True)
    assert "demo" in r.stdout and "tier=web" in r.stdout
    r = cp.kubectl("get", "pods", "-n", ns, "--field-selector=status.phase=Running", check=True)
    assert "No resources found" in r.stderr
    r = cp.kubectl("describe", "pod", "demo", "-n", ns, check=True)
    for want in ("Name:         demo", f"Namespace:    {ns}", "tier=web", "note: hello", "busybox:1.37",
                 "Status:       Pending", "Events:"):
        assert want in r.stdout, want
    r = cp.kubectl("delete", "pod", "demo", "-n", ns, check=True)
    assert r.stdout.strip() == 'pod "demo" deleted'
    r = cp.kubectl("get", "pod", "demo", "-n", ns)
    assert r.returncode == 1 and 'Error from server (NotFound): pods "demo" not found' in r.stderr


def test_apply_twice_changed_and_server_side(cp: ControlPlane, ns: str) -> None:
    f = manifest(cp, "app", ns)
    assert cp.kubectl("apply", "-f", f, check=True).stdout.strip() == "pod/app created"
    assert cp.kubectl("apply", "-f", f, check=True).stdout.strip() == "pod/app unchanged"
    f2 = manifest(cp, "app", ns, image="busybox:1.37")
    assert cp.kubectl("apply", "-f", f2, check=True).stdout.strip() == "pod/app configured"
    obj = json.loads(cp.kubectl("get", "pod", "app", "-n", ns, "-o", "json", check=True).stdout)
    assert obj["spec"]["containers"][0]["image"] == "busybox:1.37"
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    r = cp.kubectl("apply", "--server-side", "-f", f2, check=True)
    assert r.stdout.strip() == "pod/app serverside-applied"
    fs = manifest(cp, "ssa", ns)
    assert "serverside-applied" in cp.kubectl("apply", "--server-side", "-f", fs, check=True).stdout
    assert "serverside-applied" in cp.kubectl("apply", "--server-side", "-f", fs, check=True).stdout
    # a conflict with another manager, then forced
    r = cp.kubectl("apply", "--server-side", "--field-manager=other", "-f", manifest(cp, "ssa", ns, "busybox:9"))
    assert r.returncode == 1 and "conflict" in r.stderr.lower()
    r = cp.kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f",
                   manifest(cp, "ssa", ns, "busybox:9"), check=True)
    obj = json.loads(cp.kubectl("get", "pod", "ssa", "-n", ns, "-o", "json", check=True).stdout)
    assert obj["spec"]["containers"][0]["image"] == "busybox:9"
    r = cp.kubectl("apply", "--dry-run=server", "-f", manifest(cp, "dry", ns), check=True)
    assert "(server dry run)" in r.stdout
    assert cp.kubectl("get", "pod", "dry", "-n", ns).returncode == 1
    r = cp.kubectl("delete", "-f", f2, check=True)
    assert 'pod "app" deleted' in r.stdout


def test_invalid_and_unknown_fields_messages(cp: ControlPlane, ns: str) -> None:
    bad = cp.root / "bad.yaml"
    bad.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: Bad_Name, namespace: {ns}}}\nspec:\n"
                   "  containers:\n  - name: c\n    ports: [{containerPort: 70000}]\n")
    r = cp.kubectl("create", "-f", str(bad))
    assert r.returncode == 1
    assert 'The Pod "Bad_Name" is invalid' in r.stderr
    assert "spec.containers[0].image: Required value" in r.stderr
    assert "spec.containers[0].ports[0].containerPort: Invalid value: 70000" in r.stderr
    unk = cp.root / "unk.yaml"
    unk.write_text(POD.format(name="unk", ns=ns, image="x") + "  bogusField: 1\n")
    r = cp.kubectl("create", "-f", str(unk))
    assert r.returncode == 1 and 'strict decoding error: unknown field "spec.bogusField"' in r.stderr
    r = cp.kubectl("create", "-f", str(unk), "--validate=false", check=True)
    assert "created" in r.stdout


def test_get_watch_and_wait(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    cp.kubectl("create", "-f", manifest(cp, "w", ns), check=True)
    kubeconfig, cache = str(cp.kubeconfig), str(cp.root / "kcache-w")
    watcher = subprocess.Popen(["/usr/bin/kubectl", "--kubeconfig", kubeconfig, "--cache-dir", cache, "get", "pods",
                                "-n", ns, "-w", "--request-timeout=0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    waiter = subprocess.Popen(["/usr/bin/kubectl", "--kubeconfig", kubeconfig, "--cache-dir", cache + "2", "wait",
                               "--for=condition=Ready", "pod/w", "-n", ns, "--timeout=30s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    u = f"{cp.url}/api/v1/namespaces/{ns}/pods/w/status"
    r = api.patch(u, data=json.dumps({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True"}]}}), headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 200
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out.strip() == "pod/w condition met"
    time.sleep(0.5)
    watcher.terminate()
    out, _ = watcher.communicate(timeout=10)
    lines = [ln.split() for ln in out.splitlines()]
    assert lines[0][:3] == ["NAME", "READY", "STATUS"]
    assert lines[1][:3] == ["w", "0/1", "Pending"] and lines[-1][:3] == ["w", "0/1", "Running"]
    r = cp.kubectl("wait", "--for=condition=Nope", "pod/w", "-n", ns, "--timeout=1s")
    assert r.returncode == 1 and "timed out" in r.stderr


def test_unauthorized_kubectl(cp: ControlPlane) -> None:
    bad = cp.root / "bad.kubeconfig"
    cfg = yaml.safe_load(cp.kubeconfig.read_text())
    cfg["users"][0]["user"]["token"] = "wrong"
    bad.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(["/usr/bin/kubectl", "--kubeconfig", str(bad), "--cache-dir", str(cp.root / "kc-bad"),
                        "get", "pods"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "You must be logged in to the server" in r.stderr


@pytest.mark.parametrize("version", [27, 28, 29, 30, 31, 32, 33])
def test_versioned_kubectl(cp: ControlPlane, ns: str, version: int) -> None:
    """Every shipped client: create (1.27/1.28 only validate against protobuf OpenAPI v2, which this server
    does not serve, so they need --validate=false), get, get -o yaml, label, delete."""
    name = f"v{version}"
    extra = ["--validate=false"] if version <= 28 else []
    r = cp.kubectl("create", "-f", manifest(cp, name, ns), *extra, version=version, check=True)
    assert r.stdout.strip() == f"pod/{name} created"
    r = cp.kubectl("get", "pods", "-n", ns, version=version, check=True)
    assert r.stdout.split("\n")[1].split()[:3] == [name, "0/1", "Pending"]
    obj = yaml.safe_load(cp.kubectl("get", "pod", name, "-n", ns, "-o", "yaml", version=version, check=True).stdout)
    assert obj["metadata"]["name"] == name
    assert "labeled" in cp.kubectl("label", "pod", name, "-n", ns, "x=y", version=version, check=True).stdout
    assert "deleted" in cp.kubectl("delete", "pod", name, "-n", ns, version=version, check=True).stdout


def test_kubectl_128_needs_validate_false(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    """Documented gap: no protobuf OpenAPI v2, so 1.27/1.28 client-side validation fails cleanly (nothing stored)."""
    assert VERSIONED.format(28)
    r = cp.kubectl("create", "-f", manifest(cp, "old", ns), version=28)
    assert r.returncode == 1 and "NotFound" in r.stderr
    assert api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/old").status_code == 404
    r = api.get(f"{cp.url}/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert r.status_code == 404 and "--validate=false" in r.text


def test_namespaces_events_and_describe(cp: ControlPlane, api: requests.Session) -> None:
    ns_file = cp.root / "ns.yaml"
    ns_file.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: kns}\n---\n"
                       "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1, namespace: kns}\ndata: {a: '1'}\n")
    r = cp.kubectl("apply", "-f", str(ns_file), check=True)
    assert r.stdout.split("\n")[:2] == ["namespace/kns created", "configmap/c1 created"]
    cp.kubectl("create", "-f", manifest(cp, "evp", "kns"), check=True)
    uid = json.loads(cp.kubectl("get", "pod", "evp", "-n", "kns", "-o", "json", check=True).stdout)["metadata"]["uid"]
    ev = {"metadata": {"name": "evp.1"}, "involvedObject": {"kind": "Pod", "name": "evp", "namespace": "kns",
                                                            "uid": uid, "apiVersion": "v1"},
          "reason": "Scheduled", "message": "Successfully assigned kns/evp to n1", "type": "Normal",
          "source": {"component": "default-scheduler"}, "firstTimestamp": "2026-01-01T00:00:00Z",
          "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1}
    assert api.post(cp.url + "/api/v1/namespaces/kns/events", json=ev).status_code == 201
    r = cp.kubectl("describe", "pod", "evp", "-n", "kns", check=True)
    assert "Scheduled" in r.stdout and "Successfully assigned kns/evp to n1" in r.stdout
    r = cp.kubectl("get", "events", "-n", "kns", check=True)
    assert r.stdout.split("\n")[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "pod/evp" in r.stdout
    r = cp.kubectl("get", "cm", "-n", "kns", check=True)
    assert r.stdout.split("\n")[1].split()[:2] == ["c1", "1"]
    r = cp.kubectl("delete", "namespace", "kns", "--timeout=20s", check=True)
    assert 'namespace "kns" deleted' in r.stdout
    assert cp.kubectl("get", "ns", "kns").returncode == 1
    r = cp.kubectl("delete", "namespace", "kube-system")
    assert r.returncode == 1 and "Forbidden" in r.stderr


def test_typed_client_generators(cp: ControlPlane) -> None:
    """`kubectl create configmap|secret|namespace` send protobuf bodies (1.32+), which the server
    decodes (more versions and kinds in test_protobuf.py)."""
    r = cp.kubectl("create", "configmap", "gen", "--from-literal=a=1", check=True)
    assert r.stdout.strip() == "configmap/gen created"
    assert json.loads(cp.kubectl("get", "configmap", "gen", "-o", "json", check=True).stdout)["data"] == {"a": "1"}
    cp.kubectl("delete", "configmap", "gen", check=True)


@pytest.mark.parametrize("version", [27, 33])
def test_versioned_apply_twice_and_server_side(cp: ControlPlane, ns: str, version: int) -> None:
    extra = ["--validate=false"] if version <= 28 else []
    f = manifest(cp, f"ap{version}", ns)
    assert "created" in cp.kubectl("apply", "-f", f, *extra, version=version, check=True).stdout
    assert "unchanged" in cp.kubectl("apply", "-f", f, *extra, version=version, check=True).stdout
    f2 = manifest(cp, f"ap{version}", ns, image="busybox:1.37")
    assert "configured" in cp.kubectl("apply", "-f", f2, *extra, version=version, check=True).stdout
    r = cp.kubectl("apply", "--server-side", "-f", f2, *extra, version=version, check=True)
    assert "serverside-applied" in r.stdout
