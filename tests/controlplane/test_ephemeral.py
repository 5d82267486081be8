"""pods/ephemeralcontainers: the subresource `kubectl debug` writes, with Kubernetes' rules.

Only spec.ephemeralContainers is taken from a write; each rule of validateEphemeralContainers
answers 422 with its field path; added containers can be neither changed nor removed; the
plain pod update keeps refusing the field; nodes may not add containers to pods.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import requests

from .conftest import ControlPlane, pod

SMP = {"Content-Type": "application/strategic-merge-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


def eph_url(cp: ControlPlane, ns: str, name: str) -> str:
    return f"{cp.url}/api/v1/namespaces/{ns}/pods/{name}/ephemeralcontainers"


def debug_container(name: str = "dbg", **extra: Any) -> dict[str, Any]:
    """What kubectl debug sends (including its zero-valued `resources: {}`)."""
    return {"name": name, "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "stdin": True,
            "tty": True, "terminationMessagePolicy": "File", "resources": {}, **extra}


def make_pod(cp: ControlPlane, api: requests.Session, ns: str, name: str, **extra: Any) -> dict[str, Any]:
    body = pod(name, volumes=[{"name": "data", "emptyDir": {}}], **extra)
    body["spec"]["initContainers"] = [{"name": "setup", "image": "busybox:1.36"}]
    r = api.post(f"{cp.url}/api/v1/namespaces/{ns}/pods", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def add(api: requests.Session, cp: ControlPlane, ns: str, name: str, *containers: dict[str, Any]) -> requests.Response:
    return api.patch(eph_url(cp, ns, name), data=json.dumps({"spec": {"ephemeralContainers": list(containers)}}),
                     headers=SMP)


def causes(r: requests.Response) -> list[tuple[str, str]]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid" and body["details"]["kind"] == "Pod"
    return [(c["field"], c["reason"]) for c in body["details"]["causes"]]


def test_add_through_each_patch_type_and_put(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    created = make_pod(cp, api, ns, "web")
    r = add(api, cp, ns, "web", debug_container(targetContainerName="main"))
    assert r.status_code == 200, r.text
    got = r.json()
    ec = got["spec"]["ephemeralContainers"]
    assert [c["name"] for c in ec] == ["dbg"] and ec[0]["targetContainerName"] == "main"
    # defaulted like any container; the rest of the pod untouched
    assert ec[0]["terminationMessagePath"] == "/dev/termination-log"
    assert {k: val for k, val in got["spec"].items() if k != "ephemeralContainers"} == created["spec"]
    assert got["metadata"]["generation"] == created["metadata"]["generation"] + 1
    assert api.get(eph_url(cp, ns, "web")).json()["spec"]["ephemeralContainers"] == ec
    # merge patch: the list is replaced, so it must carry the existing one
    r = api.patch(eph_url(cp, ns, "web"), headers=MERGE, data=json.dumps(
        {"spec": {"ephemeralContainers": [*ec, debug_container("dbg2", image="busybox:latest")]}}))
    assert r.status_code == 200, r.text
    ec = r.json()["spec"]["ephemeralContainers"]
    assert [c["name"] for c in ec] == ["dbg", "dbg2"] and ec[1]["imagePullPolicy"] == "IfNotPresent"
    # JSON patch
    r = api.patch(eph_url(cp, ns, "web"), headers=JSONPATCH, data=json.dumps(
        [{"op": "add", "path": "/spec/ephemeralContainers/-", "value": {"name": "dbg3", "image": "busybox"}}]))
    assert r.status_code == 200, r.text
    assert r.json()["spec"]["ephemeralContainers"][2]["imagePullPolicy"] == "Always"
    # PUT: only spec.ephemeralContainers is taken; a label or image change in the body is ignored
    cur = r.json()
    cur["metadata"]["labels"]["sneaky"] = "yes"
    cur["spec"]["containers"][0]["image"] = "busybox:1.37"
    cur["spec"]["ephemeralContainers"].append(debug_container("dbg4"))
    r = api.put(eph_url(cp, ns, "web"), json=cur)
    assert r.status_code == 200, r.text
    stored = api.get(f"{cp.url}/api/v1/namespaces/{ns}/pods/web").json()
    assert [c["name"] for c in stored["spec"]["ephemeralContainers"]] == ["dbg", "dbg2", "dbg3", "dbg4"]
    assert "sneaky" not in stored["metadata"]["labels"]
    assert stored["spec"]["containers"][0]["image"] == "busybox:1.36"
    managers = {(m["manager"], m.get("subresource", "")) for m in stored["metadata"]["managedFields"]}
    assert any(sub == "ephemeralcontainers" for _, sub in managers)


def test_discovery_lists_the_subresource(cp: ControlPlane, api: requests.Session) -> None:
    res = {r["name"]: r for r in api.get(cp.url + "/api/v1").json()["resources"]}
    assert res["pods/ephemeralcontainers"]["verbs"] == ["get", "patch", "update"]
    assert res["pods/ephemeralcontainers"]["kind"] == "Pod"


def test_each_rule_answers_with_its_field(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    make_pod(cp, api, ns, "p")
    path = "spec.ephemeralContainers[0]"
    cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({"image": "busybox"}, [(f"{path}.name", "FieldValueRequired")]),
        ({"name": "Bad_Name", "image": "busybox"}, [(f"{path}.name", "FieldValueInvalid")]),
        ({"name": "main", "image": "busybox"}, [(f"{path}.name", "FieldValueDuplicate")]),
        ({"name": "setup", "image": "busybox"}, [(f"{path}.name", "FieldValueDuplicate")]),
        ({"name": "e"}, [(f"{path}.image", "FieldValueRequired")]),
        ({"name": "e", "image": "busybox", "targetContainerName": "nope"},
         [(f"{path}.targetContainerName", "FieldValueNotFound")]),
        ({"name": "e", "image": "busybox", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
         [(f"{path}.ports", "FieldValueForbidden")]),
        ({"name": "e", "image": "busybox", "resources": {"limits": {"cpu": "1"}}},
         [(f"{path}.resources", "FieldValueForbidden")]),
        ({"name": "e", "image": "busybox", "restartPolicy": "Always"},
         [(f"{path}.restartPolicy", "FieldValueForbidden")]),
        ({"name": "e", "image": "busybox", "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]},
         [(f"{path}.resizePolicy", "FieldValueForbidden")]),
        ({"name": "e", "image": "busybox", "lifecycle": {"preStop": {"exec": {"command": ["true"]}}}},
         [(f"{path}.lifecycle", "FieldValueForbidden")]),
        ({"name": "e", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "x"}]},
         [(f"{path}.volumeMounts[0].subPath", "FieldValueForbidden")]),
        ({"name": "e", "image": "busybox", "volumeMounts": [{"name": "nope", "mountPath": "/d"}]},
         [(f"{path}.volumeMounts[0].name", "FieldValueNotFound")]),
        ({"name": "e", "image": "busybox", "imagePullPolicy": "Sometimes"},
         [(f"{path}.imagePullPolicy", "FieldValueNotSupported")]),
    ]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        cases.append(({"name": "e", "image": "busybox", probe: {"exec": {"command": ["true"]}}},
                      [(f"{path}.{probe}", "FieldValueForbidden")]))
    for container, want in cases:
        r = add(api, cp, ns, "p", container)
        assert causes(r) == want, (container, r.json()["message"])
        assert r.json()["message"].startswith('Pod "p" is invalid: ')
    r = api.patch(eph_url(cp, ns, "p"), headers=MERGE, data=json.dumps(
        {"spec": {"ephemeralContainers": [debug_container("twin"), debug_container("twin")]}}))
    assert causes(r) == [("spec.ephemeralContainers[1].name", "FieldValueDuplicate")]
    # nothing of the refused writes was stored
    assert "ephemeralContainers" not in api.get(eph_url(cp, ns, "p")).json()["spec"]
    msg = add(api, cp, ns, "p", {"name": "e", "image": "busybox", "ports": [{"containerPort": 80}]}).json()["message"]
    assert "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an Ephemeral Container" in msg


def test_existing_ones_may_not_change_or_go(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    make_pod(cp, api, ns, "p")
    assert add(api, cp, ns, "p", debug_container("one"), debug_container("two")).status_code == 200
    r = add(api, cp, ns, "p", debug_container("one", image="busybox:1.37"))
    assert causes(r) == [("spec.ephemeralContainers", "FieldValueForbidden")]
    assert 'existing ephemeral containers "one" may not be changed' in r.json()["message"]
    r = api.patch(eph_url(cp, ns, "p"), headers=MERGE, data=json.dumps(
        {"spec": {"ephemeralContainers": [debug_container("one")]}}))
    assert 'existing ephemeral containers "two" may not be removed' in r.json()["message"]
    assert causes(r) == [("spec.ephemeralContainers", "FieldValueForbidden")]
    r = api.patch(eph_url(cp, ns, "p"), headers=SMP, data=json.dumps(
        {"spec": {"ephemeralContainers": [{"name": "two", "$patch": "delete"}]}}))
    assert causes(r) == [("spec.ephemeralContainers", "FieldValueForbidden")]
    stored = api.get(eph_url(cp, ns, "p")).json()["spec"]["ephemeralContainers"]
    assert [(c["name"], c["image"]) for c in stored] == [("one", "busybox:1.36"), ("two", "busybox:1.36")]


def test_plain_pod_writes_refuse_ephemeral_containers(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    pods = f"{cp.url}/api/v1/namespaces/{ns}/pods"
    body = pod("born-with-one")
    body["spec"]["ephemeralContainers"] = [debug_container()]
    r = api.post(pods, json=body)
    assert causes(r) == [("spec.ephemeralContainers", "FieldValueForbidden")]
    assert "cannot be set on create" in r.json()["message"]
    make_pod(cp, api, ns, "p")
    r = api.patch(f"{pods}/p", headers=SMP, data=json.dumps({"spec": {"ephemeralContainers": [debug_container()]}}))
    assert causes(r) == [("spec", "FieldValueForbidden")]
    assert add(api, cp, ns, "p", debug_container()).status_code == 200
    cur = api.get(f"{pods}/p").json()
    cur["spec"]["ephemeralContainers"] = []
    assert causes(api.put(f"{pods}/p", json=cur)) == [("spec", "FieldValueForbidden")]
    # other pod updates still work with an ephemeral container in the spec
    r = api.patch(f"{pods}/p", headers=MERGE, data='{"metadata":{"labels":{"x":"y"}}}')
    assert r.status_code == 200 and len(r.json()["spec"]["ephemeralContainers"]) == 1


def test_static_pods_do_not_support_them(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    make_pod(cp, api, ns, "mirror", nodeName="n1")
    api.patch(f"{cp.url}/api/v1/namespaces/{ns}/pods/mirror", headers=MERGE,
              data='{"metadata":{"annotations":{"kubernetes.io/config.mirror":"abc"}}}')
    r = add(api, cp, ns, "mirror", debug_container())
    assert causes(r) == [("", "FieldValueForbidden")]
    assert "static pods do not support ephemeral containers" in r.json()["message"]


@pytest.fixture
def node_session(cp: ControlPlane) -> tuple[str, requests.Session]:
    """A node of its own (unique name), joined with the join token: (node name, its session)."""
    join = cp.session(token=(cp.data / "join-token").read_text().strip())
    name = f"eph-{secrets.token_hex(3)}"
    r = join.post(cp.url + "/kubeletpy/join", json={"nodeName": name})
    assert r.status_code == 201, r.text
    return name, cp.session(token=r.json()["token"])


def test_nodes_may_not_add_ephemeral_containers(cp: ControlPlane, api: requests.Session, ns: str,
                                                node_session: tuple[str, requests.Session]) -> None:
    node, session = node_session
    make_pod(cp, api, ns, "bound", nodeName=node)
    for method, kwargs in (("patch", {"headers": SMP, "data": json.dumps(
            {"spec": {"ephemeralContainers": [debug_container()]}})}), ("put", {"json": pod("bound")}),
            ("get", {})):
        r = session.request(method, eph_url(cp, ns, "bound"), **kwargs)
        assert r.status_code == 403, r.text
        body = r.json()
        assert body["kind"] == "Status" and body["reason"] == "Forbidden"
        assert f'User "system:node:{node}" cannot' in body["message"]
        assert '"pods/ephemeralcontainers"' in body["message"]
    assert "ephemeralContainers" not in api.get(eph_url(cp, ns, "bound")).json()["spec"]


def test_not_found_statuses_carry_details(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    """kubectl dereferences ErrStatus.Details of any NotFound."""
    r = add(api, cp, ns, "missing", debug_container())
    assert r.status_code == 404
    assert r.json()["details"] == {"name": "missing", "kind": "pods"}
    make_pod(cp, api, ns, "p")
    for path in (f"/api/v1/namespaces/{ns}/pods/p/nonsense", "/api/v1/widgets", "/apis/apps/v1", "/nowhere",
                 f"/api/v1/namespaces/{ns}/pods/p/proxy"):
        r = api.get(cp.url + path)
        assert r.status_code == 404, path
        assert r.json()["details"] == {}, path
