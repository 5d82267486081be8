"""Node identities: join with the node-join token, then NodeRestriction-like limits."""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

from .conftest import ControlPlane, pod


@pytest.fixture(scope="module")
def node(cp: ControlPlane) -> requests.Session:
    join_token = (cp.data / "join-token").read_text().strip()
    assert oct((cp.data / "join-token").stat().st_mode & 0o777) == "0o600"
    assert join_token not in (cp.data / "tokens.json").read_text()  # stored hashed
    j = cp.session(token=join_token)
    # the join token can do nothing else
    r = j.get(cp.url + "/api/v1/pods")
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
    r = j.post(cp.url + "/kubeletpy/join", json={"nodeName": "Bad_Node"})
    assert r.status_code == 422
    r = j.post(cp.url + "/kubeletpy/join", json={"nodeName": "n1"})
    assert r.status_code == 201, r.text
    cred = r.json()
    assert cred["user"] == "system:node:n1" and cred["caData"]
    return cp.session(token=cred["token"])


def test_node_registers_itself_and_keeps_to_its_own(cp: ControlPlane, api: requests.Session,
                                                   node: requests.Session) -> None:
    u = cp.url
    r = node.post(u + "/api/v1/nodes", json={"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "2"}}})
    assert r.status_code == 201, r.text
    r = node.post(u + "/api/v1/nodes", json={"metadata": {"name": "n2"}})
    assert r.status_code == 403 and 'User "system:node:n1" cannot create resource "nodes"' in r.json()["message"]
    cur = node.get(u + "/api/v1/nodes/n1").json()
    cur["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert node.put(u + "/api/v1/nodes/n1/status", json=cur).status_code == 200
    api.post(u + "/api/v1/nodes", json={"metadata": {"name": "n2"}})
    assert node.patch(u + "/api/v1/nodes/n2", data='{"metadata":{"labels":{"x":"y"}}}',
                      headers={"Content-Type": "application/merge-patch+json"}).status_code == 403
    lease = {"metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}
    lu = u + "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    assert node.post(lu, json=lease).status_code == 201
    assert node.post(lu, json={**lease, "metadata": {"name": "n2"}}).status_code == 403
    assert node.post(u + "/apis/coordination.k8s.io/v1/namespaces/default/leases", json=lease).status_code == 403
    ev = {"metadata": {"name": "n1.ev"}, "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "Started"}
    assert node.post(u + "/api/v1/namespaces/default/events", json=ev).status_code == 201
    assert node.delete(u + "/api/v1/namespaces/default/events/n1.ev").status_code == 403
    assert node.get(u + "/api/v1/namespaces").status_code == 403
    assert node.post(u + "/api/v1/namespaces/default/pods", json=pod("nodepod")).status_code == 403


def test_node_pod_status_and_secret_access(cp: ControlPlane, api: requests.Session, node: requests.Session) -> None:
    u = cp.url + "/api/v1/namespaces/default"
    api.post(u + "/secrets", json={"metadata": {"name": "mine"}, "stringData": {"k": "v"}})
    api.post(u + "/secrets", json={"metadata": {"name": "other"}, "stringData": {"k": "v"}})
    api.post(u + "/configmaps", json={"metadata": {"name": "cfg"}, "data": {"k": "v"}})
    body = pod("onn1", volumes=[{"name": "s", "secret": {"secretName": "mine"}}])
    body["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "cfg"}}]
    api.post(u + "/pods", json=body)
    api.post(u + "/pods", json=pod("elsewhere"))
    api.post(u + "/pods/onn1/binding", json={"target": {"kind": "Node", "name": "n1"}, "metadata": {"name": "onn1"}})
    api.post(u + "/pods/elsewhere/binding", json={"target": {"kind": "Node", "name": "n2"},
                                                  "metadata": {"name": "elsewhere"}})
    # reads of pods are fine (the agent lists pods bound to it)
    r = node.get(cp.url + "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1")
    assert [p["metadata"]["name"] for p in r.json()["items"]] == ["onn1"]
    # status only for its own pods
    st = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    hdr = {"Content-Type": "application/strategic-merge-patch+json"}
    assert node.patch(u + "/pods/onn1/status", data=json.dumps(st), headers=hdr).status_code == 200
    r = node.patch(u + "/pods/elsewhere/status", data=json.dumps(st), headers=hdr)
    assert r.status_code == 403 and r.json()["kind"] == "Status"
    assert node.patch(u + "/pods/onn1", data='{"metadata":{"labels":{"a":"b"}}}', headers=hdr).status_code == 403
    # secrets/configmaps: only those its pods use
    assert node.get(u + "/secrets/mine").status_code == 200
    assert node.get(u + "/configmaps/cfg").status_code == 200
    r = node.get(u + "/secrets/other")
    assert r.status_code == 403 and "no relationship found between node 'n1'" in r.json()["message"]
    assert node.get(u + "/secrets").status_code == 403
    # delete only its own pods
    assert node.delete(u + "/pods/elsewhere").status_code == 403
    assert node.delete(u + "/pods/onn1", json={"gracePeriodSeconds": 0}).status_code == 200


def test_impersonation_is_admin_only(cp: ControlPlane, api: requests.Session, node: requests.Session) -> None:
    r = api.get(cp.url + "/api/v1/namespaces/default/secrets/other", headers={"Impersonate-User": "system:node:n1"})
    assert r.status_code == 403
    r = node.get(cp.url + "/api/v1/nodes", headers={"Impersonate-User": "kubernetes-admin"})
    assert r.status_code == 403


def test_rejoin_revokes_previous_node_token(cp: ControlPlane) -> None:
    j = cp.session(token=(cp.data / "join-token").read_text().strip())
    t1 = j.post(cp.url + "/kubeletpy/join", json={"nodeName": "n9"}).json()["token"]
    assert cp.session(token=t1).get(cp.url + "/api/v1/nodes").status_code == 200
    t2 = j.post(cp.url + "/kubeletpy/join", json={"nodeName": "n9"}).json()["token"]
    assert cp.session(token=t1).get(cp.url + "/api/v1/nodes").status_code == 401
    assert cp.session(token=t2).get(cp.url + "/api/v1/nodes").status_code == 200


def test_join_helper_writes_a_working_node_kubeconfig(cp: ControlPlane) -> None:
    from kubeletpy.controlplane.join import JoinError, join_node

    ca = (cp.data / "pki" / "ca.crt").read_bytes()
    text = join_node(cp.url, (cp.data / "join-token").read_text(), "helper-node", ca)
    path = cp.root / "node.kubeconfig"
    path.write_text(text)
    r = subprocess.run(["/usr/bin/kubectl", "--kubeconfig", str(path), "--cache-dir", str(cp.root / "kc-node"),
                        "get", "nodes"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["/usr/bin/kubectl", "--kubeconfig", str(path), "--cache-dir", str(cp.root / "kc-node"),
                        "get", "secrets"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Error from server (Forbidden)" in r.stderr
    with pytest.raises(JoinError):
        join_node(cp.url, "wrong-token", "helper-node", ca)


def test_node_creates_only_its_own_mirror_pods(cp: ControlPlane, node: requests.Session) -> None:
    u = cp.url + "/api/v1/namespaces/default/pods"
    mirror = pod("static-n1")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    mirror["spec"]["nodeName"] = "n1"
    r = node.post(u, json=mirror)
    assert r.status_code == 201, r.text
    assert node.delete(u + "/static-n1").status_code == 200
    other = json.loads(json.dumps(mirror))
    other["metadata"]["name"], other["spec"]["nodeName"] = "static-n2", "n2"
    assert node.post(u, json=other).status_code == 403
    plain = json.loads(json.dumps(mirror))
    plain["metadata"]["name"], plain["metadata"]["annotations"] = "plain-n1", {}
    assert node.post(u, json=plain).status_code == 403
    with_secret = json.loads(json.dumps(mirror))
    with_secret["metadata"]["name"] = "secret-n1"
    with_secret["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "mine"}}]
    assert node.post(u, json=with_secret).status_code == 403
