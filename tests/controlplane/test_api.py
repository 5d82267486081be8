"""API conformance-style tests over HTTPS with the admin token (and without)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests

from .conftest import ControlPlane, pod


def url(cp: ControlPlane, path: str) -> str:
    return cp.url + path


def pods_url(cp: ControlPlane, ns: str, name: str = "") -> str:
    return cp.url + f"/api/v1/namespaces/{ns}/pods" + (f"/{name}" if name else "")


# ---------------------------------------------------------------- discovery, version, health, auth

def test_version_health_and_discovery(cp: ControlPlane, api: requests.Session) -> None:
    anon = cp.session(token=None)
    v = anon.get(url(cp, "/version")).json()
    assert v["major"] == "1" and int(v["minor"]) >= 30
    for p in ("/healthz", "/livez", "/readyz"):
        r = anon.get(url(cp, p))
        assert r.status_code == 200 and r.text == "ok"
    assert api.get(url(cp, "/api")).json()["versions"] == ["v1"]
    groups = {g["name"] for g in api.get(url(cp, "/apis")).json()["groups"]}
    assert groups == {"certificates.k8s.io", "coordination.k8s.io", "events.k8s.io"}
    res = {r["name"]: r for r in api.get(url(cp, "/api/v1")).json()["resources"]}
    assert res["pods"]["shortNames"] == ["po"] and res["pods"]["namespaced"]
    assert {"pods/status", "pods/binding", "nodes/status", "namespaces/status"} <= set(res)
    assert not res["nodes"]["namespaced"]
    r = api.get(url(cp, "/apis"), headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;"
                                                      "as=APIGroupDiscoveryList,application/json"})
    assert r.headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    items = {i["metadata"]["name"]: i for i in r.json()["items"]}
    lease = items["coordination.k8s.io"]["versions"][0]["resources"][0]
    assert lease["responseKind"] == {"group": "coordination.k8s.io", "version": "v1", "kind": "Lease"}
    assert lease["scope"] == "Namespaced"
    r = api.get(url(cp, "/api"), headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2beta1;"
                                                     "as=APIGroupDiscoveryList"})
    assert r.json()["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    assert api.get(url(cp, "/apis/events.k8s.io")).json()["preferredVersion"]["version"] == "v1"
    assert api.get(url(cp, "/apis/apps/v1")).status_code == 404


def test_openapi_v3_has_patch_with_field_validation(cp: ControlPlane, api: requests.Session) -> None:
    root = api.get(url(cp, "/openapi/v3")).json()["paths"]
    assert set(root) == {"api/v1", "apis/certificates.k8s.io/v1", "apis/coordination.k8s.io/v1",
                         "apis/events.k8s.io/v1"}
    doc = api.get(url(cp, root["api/v1"]["serverRelativeURL"])).json()
    op = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert "fieldValidation" in {p["name"] for p in op["parameters"]}
    assert api.get(url(cp, "/openapi/v2")).status_code == 404


def test_anonymous_and_bad_token_get_401_status(cp: ControlPlane) -> None:
    for s in (cp.session(token=None), cp.session(token="nope")):
        r = s.get(url(cp, "/api/v1/namespaces/default/pods"))
        assert r.status_code == 401
        assert r.json()["kind"] == "Status" and r.json()["reason"] == "Unauthorized"


def test_tls_is_verified_with_generated_ca(cp: ControlPlane) -> None:
    assert cp.session(token=None).get(url(cp, "/healthz")).ok
    plain = requests.Session()
    plain.trust_env = False
    try:
        plain.get(url(cp, "/healthz"), verify=True, timeout=5)
        raise AssertionError("a self-signed chain must not verify against the system roots")
    except requests.exceptions.SSLError:
        pass


def test_protobuf_refused_cleanly(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    r = api.post(pods_url(cp, ns), data=b"\x0a\x02k8s", headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
    r = api.get(pods_url(cp, ns), headers={"Accept": "application/vnd.kubernetes.protobuf"})
    assert r.status_code == 406
    r = api.get(pods_url(cp, ns), headers={"Accept": "application/vnd.kubernetes.protobuf,application/json"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")


# ---------------------------------------------------------------- CRUD and metadata

def test_create_get_update_delete_metadata(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    r = api.post(pods_url(cp, ns), json=pod("web"))
    assert r.status_code == 201, r.text
    created = r.json()
    m = created["metadata"]
    assert created["kind"] == "Pod" and created["apiVersion"] == "v1"
    assert m["uid"] and m["creationTimestamp"].endswith("Z") and m["generation"] == 1
    assert int(m["resourceVersion"]) > 0 and m["namespace"] == ns
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    got = api.get(pods_url(cp, ns, "web")).json()
    assert got["metadata"]["resourceVersion"] == m["resourceVersion"]
    # update image: generation bumps, rv grows, status from the client is ignored
    got["spec"]["containers"][0]["image"] = "busybox:1.37"
    got["status"] = {"phase": "Running"}
    r = api.put(pods_url(cp, ns, "web"), json=got)
    assert r.status_code == 200, r.text
    upd = r.json()
    assert upd["metadata"]["generation"] == 2 and upd["status"]["phase"] == "Pending"
    assert int(upd["metadata"]["resourceVersion"]) > int(m["resourceVersion"])
    # stale resourceVersion -> 409 Conflict, nothing stored
    r = api.put(pods_url(cp, ns, "web"), json=got)
    assert r.status_code == 409 and r.json()["reason"] == "Conflict"
    assert "the object has been modified" in r.json()["message"]
    # a no-op update keeps the resourceVersion
    r = api.put(pods_url(cp, ns, "web"), json=upd)
    assert r.json()["metadata"]["resourceVersion"] == upd["metadata"]["resourceVersion"]
    # immutable spec fields
    bad = api.get(pods_url(cp, ns, "web")).json()
    bad["spec"]["containers"][0]["command"] = ["sh"]
    r = api.put(pods_url(cp, ns, "web"), json=bad)
    assert r.status_code == 422 and r.json()["details"]["causes"][0]["field"] == "spec"
    # already exists
    r = api.post(pods_url(cp, ns), json=pod("web"))
    assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"
    r = api.delete(pods_url(cp, ns, "web"))
    assert r.status_code == 200 and r.json()["metadata"]["uid"] == m["uid"]
    r = api.get(pods_url(cp, ns, "web"))
    assert r.status_code == 404 and r.json()["message"] == 'pods "web" not found'


def test_generate_name_and_dry_run(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    body = pod("x")
    del body["metadata"]["name"]
    body["metadata"]["generateName"] = "gen-"
    names = {api.post(pods_url(cp, ns), json=body).json()["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("gen-") and len(n) == 9 for n in names)
    r = api.post(pods_url(cp, ns) + "?dryRun=All", json=pod("dry"))
    assert r.status_code == 201 and r.json()["metadata"]["name"] == "dry"
    assert api.get(pods_url(cp, ns, "dry")).status_code == 404
    api.post(pods_url(cp, ns), json=pod("keep"))
    r = api.delete(pods_url(cp, ns, "keep"), json={"dryRun": ["All"]})
    assert r.status_code == 200
    assert api.get(pods_url(cp, ns, "keep")).status_code == 200
    r = api.patch(pods_url(cp, ns, "keep") + "?dryRun=All", data=json.dumps({"metadata": {"labels": {"d": "1"}}}),
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.json()["metadata"]["labels"]["d"] == "1"
    assert "d" not in api.get(pods_url(cp, ns, "keep")).json()["metadata"]["labels"]


def test_selectors_and_paging(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    for i in range(7):
        body = pod(f"p{i}")
        body["metadata"]["labels"] = {"app": "web" if i % 2 else "db", "idx": str(i)}
        assert api.post(pods_url(cp, ns), json=body).status_code == 201
    api.post(url(cp, "/api/v1/nodes"), json={"metadata": {"name": "sel-node"}})
    api.post(pods_url(cp, ns, "p1") + "/binding", json={"apiVersion": "v1", "kind": "Binding",
                                                        "metadata": {"name": "p1"},
                                                        "target": {"kind": "Node", "name": "sel-node"}})

    def names(q: str) -> list[str]:
        r = api.get(pods_url(cp, ns) + q)
        assert r.status_code == 200, r.text
        return [i["metadata"]["name"] for i in r.json()["items"]]

    assert names("?labelSelector=app%3Dweb") == ["p1", "p3", "p5"]
    assert names("?labelSelector=app%3Dweb,idx+notin+(1,3)") == ["p5"]
    assert names("?fieldSelector=metadata.name%3Dp4") == ["p4"]
    assert names("?fieldSelector=spec.nodeName%3Dsel-node") == ["p1"]
    assert names("?fieldSelector=status.phase%3DPending&labelSelector=app%3Ddb") == ["p0", "p2", "p4", "p6"]
    assert api.get(pods_url(cp, ns) + "?fieldSelector=spec.bogus%3D1").status_code == 400
    # paging: 3 + 3 + 1 with continue tokens, same list revision
    seen, cont, rvs = [], "", set()
    while True:
        r = api.get(pods_url(cp, ns) + f"?limit=3&continue={cont}").json()
        seen += [i["metadata"]["name"] for i in r["items"]]
        rvs.add(r["metadata"]["resourceVersion"])
        cont = r["metadata"].get("continue", "")
        if not cont:
            break
    assert seen == [f"p{i}" for i in range(7)] and len(rvs) == 1
    assert api.get(pods_url(cp, ns) + "?continue=garbage").status_code == 400
    # all namespaces
    allp = api.get(url(cp, "/api/v1/pods?labelSelector=idx")).json()["items"]
    assert len([p for p in allp if p["metadata"]["namespace"] == ns]) == 7


def test_table_output(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    api.post(pods_url(cp, ns), json=pod("t1"))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    t = api.get(pods_url(cp, ns), headers={"Accept": accept}).json()
    assert t["kind"] == "Table"
    assert [c["name"] for c in t["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert [c["name"] for c in t["columnDefinitions"] if c["priority"] == 1][:2] == ["IP", "Node"]
    row = t["rows"][0]
    assert row["cells"][:4] == ["t1", "0/1", "Pending", 0]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "t1"
    assert t["metadata"]["resourceVersion"]
    one = api.get(pods_url(cp, ns, "t1"), headers={"Accept": accept}).json()
    assert one["kind"] == "Table" and len(one["rows"]) == 1
    nodes = api.get(url(cp, "/api/v1/nodes"), headers={"Accept": accept}).json()
    assert [c["name"] for c in nodes["columnDefinitions"]][:5] == ["Name", "Status", "Roles", "Age", "Version"]


# ---------------------------------------------------------------- validation and bad input

def test_validation_errors_are_invalid_status_with_causes(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}],
                                     "resources": {"requests": {"cpu": "2", "memory": "1x"},
                                                   "limits": {"cpu": "1"}}},
                                    {"name": "c", "image": ""}],
                     "restartPolicy": "Sometimes"}}
    r = api.post(pods_url(cp, ns), json=body)
    assert r.status_code == 422
    st = r.json()
    assert st["reason"] == "Invalid" and st["details"]["kind"] == "Pod" and st["details"]["name"] == "Bad_Name"
    fields = {c["field"] for c in st["details"]["causes"]}
    assert {"metadata.name", "spec.containers[0].ports[0].containerPort", "spec.containers[0].resources.requests",
            "spec.containers[0].resources.requests[memory]", "spec.containers[1].name",
            "spec.containers[1].image", "spec.restartPolicy"} <= fields
    assert api.get(url(cp, "/api/v1/pods")).status_code == 200
    assert api.get(pods_url(cp, ns, "Bad_Name")).status_code == 404
    r = api.post(pods_url(cp, ns), json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}})
    assert r.json()["details"]["causes"][0] == {"reason": "FieldValueRequired", "message": "Required value",
                                                "field": "spec.containers"}
    r = api.post(url(cp, "/api/v1/namespaces"), json={"metadata": {"name": "a.b"}})
    assert r.status_code == 422  # namespaces are DNS labels
    r = api.post(pods_url(cp, ns), json={"metadata": {}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert r.status_code == 422 and "name or generateName is required" in r.text


def test_strict_field_validation(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    body = pod("strict")
    body["spec"]["bogus"] = 1
    body["spec"]["containers"][0]["imagee"] = "typo"
    r = api.post(pods_url(cp, ns) + "?fieldValidation=Strict", json=body)
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"
    assert 'unknown field "spec.bogus"' in r.json()["message"]
    assert {c["field"] for c in r.json()["details"]["causes"]} == {"spec.bogus", "spec.containers[0].imagee"}
    assert api.get(pods_url(cp, ns, "strict")).status_code == 404
    r = api.post(pods_url(cp, ns) + "?fieldValidation=Warn", json=body)
    assert r.status_code == 201 and 'unknown field' in r.headers.get("Warning", "")
    assert "bogus" not in r.json()["spec"]
    dup = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"dup","name":"dup2"},"spec":{}}'
    r = api.post(pods_url(cp, ns) + "?fieldValidation=Strict", data=dup, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and 'duplicate field "name"' in r.json()["message"]
    r = api.post(pods_url(cp, ns) + "?fieldValidation=Strict", json={**pod("typed"), "spec": {"containers": "no"}})
    assert r.status_code == 400 and "expected array" in r.json()["message"]


def test_bad_bodies(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    before = api.get(pods_url(cp, ns)).json()["metadata"]["resourceVersion"]
    r = api.post(pods_url(cp, ns), data=b'{"kind": "Pod", ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["kind"] == "Status" and "JSON" in r.json()["message"]
    r = api.post(pods_url(cp, ns), data=b"kind: [unclosed", headers={"Content-Type": "application/yaml"})
    assert r.status_code == 400 and "YAML" in r.json()["message"]
    r = api.post(pods_url(cp, ns), json={"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
    assert r.status_code == 400 and "does not match" in r.json()["message"]
    r = api.post(pods_url(cp, ns), json={**pod("v"), "apiVersion": "apps/v1"})
    assert r.status_code == 400 and "API version" in r.json()["message"]
    r = api.post(pods_url(cp, ns), json={**pod("ns"), "metadata": {"name": "ns", "namespace": "other"}})
    assert r.status_code == 400 and "namespace" in r.json()["message"]
    r = api.post(pods_url(cp, ns), json=[1, 2])
    assert r.status_code == 400
    r = api.put(pods_url(cp, ns, "a"), json=pod("b"))
    assert r.status_code == 400 and "does not match the name on the URL" in r.json()["message"]
    huge = pod("huge")
    huge["metadata"]["annotations"] = {"x": "a" * (4 * 1024 * 1024)}
    r = api.post(pods_url(cp, ns), json=huge)
    assert r.status_code == 413 and r.json()["reason"] == "RequestEntityTooLarge"
    big = pod("big")
    big["metadata"]["annotations"] = {"x": "a" * (300 * 1024)}
    r = api.post(pods_url(cp, ns), json=big)
    assert r.status_code == 422 and "metadata.annotations" in r.text
    deep = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"deep"},"spec":' + b"[" * 100000 + b"]" * 100000 + b"}"
    r = api.post(pods_url(cp, ns), data=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["kind"] == "Status"
    r = api.post(url(cp, "/api/v1/namespaces/nosuchns/pods"), json=pod("p"))
    assert r.status_code == 404 and r.json()["message"] == 'namespaces "nosuchns" not found'
    r = api.get(url(cp, "/api/v1/namespaces/default/widgets"))
    assert r.status_code == 404 and r.json()["kind"] == "Status"
    assert api.get(pods_url(cp, ns)).json()["metadata"]["resourceVersion"] == before


# ---------------------------------------------------------------- patch

def test_patch_flavours(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    body = pod("pp")
    body["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    api.post(pods_url(cp, ns), json=body)

    def patch(data: Any, ctype: str, q: str = "") -> requests.Response:
        return api.patch(pods_url(cp, ns, "pp") + q, data=json.dumps(data), headers={"Content-Type": ctype})

    r = patch({"spec": {"$setElementOrder/containers": [{"name": "main"}],
                        "containers": [{"name": "main", "image": "busybox:1.37"}]}},
              "application/strategic-merge-patch+json")
    c = r.json()["spec"]["containers"][0]
    assert r.status_code == 200 and c["image"] == "busybox:1.37"
    assert c["env"] == [{"name": "A", "value": "1"}]  # merged by container name, not replaced
    r = patch({"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}},
              "application/strategic-merge-patch+json")
    assert r.status_code == 422 and "pod updates may not change fields" in r.text
    r = patch({"metadata": {"labels": {"m": "1"}}}, "application/merge-patch+json")
    assert r.json()["metadata"]["labels"]["m"] == "1"
    r = patch([{"op": "replace", "path": "/metadata/labels/m", "value": "2"}], "application/json-patch+json")
    assert r.json()["metadata"]["labels"]["m"] == "2"
    r = patch([{"op": "test", "path": "/metadata/labels/m", "value": "9"}], "application/json-patch+json")
    assert r.status_code == 422
    r = patch({"metadata": {"labels": {"x": "y"}}}, "text/plain")
    assert r.status_code == 415
    # resourceVersion precondition in the patch
    r = patch({"metadata": {"resourceVersion": "1", "labels": {"s": "1"}}}, "application/merge-patch+json")
    assert r.status_code == 409
    r = patch({"metadata": {"name": "renamed"}}, "application/merge-patch+json")
    assert r.status_code in (400, 422)
    assert api.patch(pods_url(cp, ns, "nope"), data="{}",
                     headers={"Content-Type": "application/merge-patch+json"}).status_code == 404


def test_server_side_apply(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}}
    u = url(cp, f"/api/v1/namespaces/{ns}/configmaps/cfg")
    hdr = {"Content-Type": "application/apply-patch+yaml"}
    r = api.patch(u + "?fieldManager=alice", data=json.dumps(cm), headers=hdr)
    assert r.status_code == 201, r.text
    r = api.patch(u + "?fieldManager=alice", data="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
                                                    "data: {a: '1', b: '2'}\n", headers=hdr)
    assert r.status_code == 200
    bob = {**cm, "data": {"a": "X"}}
    r = api.patch(u + "?fieldManager=bob&force=false", data=json.dumps(bob), headers=hdr)
    assert r.status_code == 409 and r.json()["details"]["causes"][0]["reason"] == "FieldManagerConflict"
    r = api.patch(u + "?fieldManager=bob&force=true", data=json.dumps(bob), headers=hdr)
    assert r.status_code == 200 and r.json()["data"]["a"] == "X"
    managers = {e["manager"]: e["operation"] for e in r.json()["metadata"]["managedFields"]}
    assert managers == {"alice": "Apply", "bob": "Apply"}
    r = api.patch(u, data=json.dumps(cm), headers=hdr)
    assert r.status_code == 400 and "fieldManager" in r.json()["message"]


# ---------------------------------------------------------------- deletion

def test_graceful_deletion_finalizers_and_status(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    api.post(url(cp, "/api/v1/nodes"), json={"metadata": {"name": "gd-node"}})
    body = pod("g")
    body["spec"]["nodeName"] = "gd-node"
    api.post(pods_url(cp, ns), json=body)
    r = api.delete(pods_url(cp, ns, "g"), json={"propagationPolicy": "Background"})
    got = r.json()
    assert got["metadata"]["deletionTimestamp"] and got["metadata"]["deletionGracePeriodSeconds"] == 30
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    assert api.get(pods_url(cp, ns, "g"), headers={"Accept": accept}).json()["rows"][0]["cells"][2] == "Terminating"
    r = api.delete(pods_url(cp, ns, "g"), json={"gracePeriodSeconds": 0})
    assert api.get(pods_url(cp, ns, "g")).status_code == 404
    # finalizers hold an object until removed
    cm = {"metadata": {"name": "fin", "finalizers": ["example.com/hold"]}, "data": {}}
    cmu = url(cp, f"/api/v1/namespaces/{ns}/configmaps")
    api.post(cmu, json=cm)
    r = api.delete(cmu + "/fin")
    assert r.status_code == 200 and r.json()["metadata"]["deletionTimestamp"]
    assert api.get(cmu + "/fin").status_code == 200
    r = api.patch(cmu + "/fin", data=json.dumps({"metadata": {"finalizers": None}}),
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200
    assert api.get(cmu + "/fin").status_code == 404
    # preconditions
    api.post(cmu, json={"metadata": {"name": "pre"}})
    r = api.delete(cmu + "/pre", json={"preconditions": {"uid": "not-it"}})
    assert r.status_code == 409
    r = api.delete(cmu + "/pre", json={"propagationPolicy": "Sideways"})
    assert r.status_code == 422


def test_status_subresource_and_binding(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    api.post(pods_url(cp, ns), json=pod("s"))
    cur = api.get(pods_url(cp, ns, "s")).json()
    cur["status"] = {"phase": "Running", "podIP": "10.0.0.5",
                     "conditions": [{"type": "Ready", "status": "True"}]}
    cur["metadata"]["labels"]["ignored"] = "yes"
    r = api.put(pods_url(cp, ns, "s") + "/status", json=cur)
    assert r.status_code == 200, r.text
    assert r.json()["status"]["phase"] == "Running" and "ignored" not in r.json()["metadata"]["labels"]
    r = api.patch(pods_url(cp, ns, "s") + "/status",
                  data=json.dumps({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                  headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.json()["status"]["conditions"] == [{"type": "Ready", "status": "False"}]
    assert r.json()["status"]["podIP"] == "10.0.0.5"
    b = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "s"}, "target": {"kind": "Node", "name": "n1"}}
    r = api.post(pods_url(cp, ns, "s") + "/binding", json=b)
    assert r.status_code == 201, r.text
    got = api.get(pods_url(cp, ns, "s")).json()
    assert got["spec"]["nodeName"] == "n1"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in got["status"]["conditions"])
    r = api.post(pods_url(cp, ns, "s") + "/binding", json=b)
    assert r.status_code == 409 and "already assigned" in r.json()["message"]
    assert api.get(pods_url(cp, ns, "s") + "/log").status_code == 404


def test_namespace_lifecycle(cp: ControlPlane, api: requests.Session) -> None:
    api.post(url(cp, "/api/v1/namespaces"), json={"metadata": {"name": "doomed"}})
    api.post(url(cp, "/api/v1/namespaces/doomed/pods"), json=pod("a"))
    api.post(url(cp, "/api/v1/namespaces/doomed/configmaps"), json={"metadata": {"name": "c"}})
    r = api.delete(url(cp, "/api/v1/namespaces/doomed"))
    assert r.status_code == 200 and r.json()["status"]["phase"] == "Terminating"
    r = api.post(url(cp, "/api/v1/namespaces/doomed/configmaps"), json={"metadata": {"name": "late"}})
    assert r.status_code in (403, 404)
    deadline = time.time() + 10
    while api.get(url(cp, "/api/v1/namespaces/doomed")).status_code != 404:
        assert time.time() < deadline
        time.sleep(0.1)
    assert api.get(url(cp, "/api/v1/namespaces/doomed/pods")).json()["items"] == []
    r = api.delete(url(cp, "/api/v1/namespaces/kube-system"))
    assert r.status_code == 403 and r.json()["reason"] == "Forbidden"
    names = {n["metadata"]["name"] for n in api.get(url(cp, "/api/v1/namespaces")).json()["items"]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


# ---------------------------------------------------------------- other kinds

def test_events_in_both_groups_and_secrets(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    ev = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "x", "namespace": ns, "uid": "u1"},
          "reason": "Pulled", "message": "pulled it", "type": "Normal", "count": 1,
          "source": {"component": "kubelet"}}
    assert api.post(url(cp, f"/api/v1/namespaces/{ns}/events"), json=ev).status_code == 201
    v1 = api.get(url(cp, f"/apis/events.k8s.io/v1/namespaces/{ns}/events/e1")).json()
    assert v1["apiVersion"] == "events.k8s.io/v1" and v1["note"] == "pulled it" and v1["regarding"]["uid"] == "u1"
    new = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e2"},
           "regarding": {"kind": "Pod", "name": "x", "namespace": ns}, "note": "n2", "reason": "R",
           "type": "Warning", "eventTime": "2026-01-01T00:00:00.000000Z", "action": "A",
           "reportingController": "c", "reportingInstance": "i"}
    assert api.post(url(cp, f"/apis/events.k8s.io/v1/namespaces/{ns}/events"), json=new).status_code == 201
    core = api.get(url(cp, f"/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name%3Dx,"
                           f"involvedObject.namespace%3D{ns}")).json()["items"]
    assert {e["metadata"]["name"]: e.get("message") for e in core} == {"e1": "pulled it", "e2": "n2"}
    su = url(cp, f"/api/v1/namespaces/{ns}/secrets")
    r = api.post(su, json={"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}})
    assert r.status_code == 201 and r.json()["data"] == {"password": "aHVudGVyMg=="} and r.json()["type"] == "Opaque"
    assert "stringData" not in r.json()
    r = api.post(su, json={"metadata": {"name": "bad"}, "data": {"k": "!!notbase64"}})
    assert r.status_code == 422
    lu = url(cp, f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases")
    r = api.post(lu, json={"metadata": {"name": "l"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 40}})
    assert r.status_code == 201 and r.json()["apiVersion"] == "coordination.k8s.io/v1"
    r = api.post(url(cp, f"/api/v1/namespaces/{ns}/configmaps"),
                 json={"metadata": {"name": "imm"}, "data": {"a": "1"}, "immutable": True})
    r = api.patch(url(cp, f"/api/v1/namespaces/{ns}/configmaps/imm"), data=json.dumps({"data": {"a": "2"}}),
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422 and "immutable" in r.text


# ---------------------------------------------------------------- watch

class Watch:
    """Read a watch stream in a thread, collecting events."""

    def __init__(self, session: requests.Session, u: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.resp = session.get(u, stream=True, headers=headers or {}, timeout=30)
        assert self.resp.status_code == 200, self.resp.text
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        try:
            for line in self.resp.iter_lines():
                if line:
                    self.events.append(json.loads(line))
        except Exception:
            pass
        self.done.set()

    def wait_for(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while len(self.events) < n and time.time() < deadline and not self.done.is_set():
            time.sleep(0.02)
        return self.events

    def close(self) -> None:
        """Let the server end the stream (every test watch has timeoutSeconds): closing a socket
        another thread is reading from blocks until that read times out."""
        self.done.wait(10)


def test_watch_events_resume_and_filters(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    rv = api.get(pods_url(cp, ns)).json()["metadata"]["resourceVersion"]
    w = Watch(api, pods_url(cp, ns) + f"?watch=true&resourceVersion={rv}&timeoutSeconds=3")
    wf = Watch(api, pods_url(cp, ns) + f"?watch=1&resourceVersion={rv}&labelSelector=app%3Dw2&timeoutSeconds=3")
    api.post(pods_url(cp, ns), json=pod("w1"))
    api.post(pods_url(cp, ns), json=pod("w2"))
    api.patch(pods_url(cp, ns, "w1"), data='{"metadata":{"labels":{"x":"1"}}}',
              headers={"Content-Type": "application/merge-patch+json"})
    api.delete(pods_url(cp, ns, "w1"))
    evs = w.wait_for(4)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [
        ("ADDED", "w1"), ("ADDED", "w2"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in wf.wait_for(1)] == [("ADDED", "w2")]
    w.close()
    wf.close()
    # resume from the middle: only what came after
    w2 = Watch(api, pods_url(cp, ns) + f"?watch=true&resourceVersion={rvs[1]}&timeoutSeconds=2")
    w2.done.wait(5)
    assert [e["type"] for e in w2.events] == ["MODIFIED", "DELETED"]
    # the legacy /watch/ prefix on a single object
    w4 = Watch(api, url(cp, f"/api/v1/watch/namespaces/{ns}/pods/w1?resourceVersion={rv}&timeoutSeconds=2"))
    w4.done.wait(5)
    assert [e["type"] for e in w4.events] == ["ADDED", "MODIFIED", "DELETED"]
    # label change that stops matching is a DELETED for a filtered watcher
    w3 = Watch(api, pods_url(cp, ns) + f"?watch=true&resourceVersion={rvs[-1]}&labelSelector=app%3Dw2&timeoutSeconds=2")
    api.patch(pods_url(cp, ns, "w2"), data='{"metadata":{"labels":{"app":"other"}}}',
              headers={"Content-Type": "application/merge-patch+json"})
    assert [e["type"] for e in w3.wait_for(1)] == ["DELETED"]
    w3.close()


def test_watch_initial_state_bookmarks_and_table(cp: ControlPlane, api: requests.Session, ns: str) -> None:
    api.post(pods_url(cp, ns), json=pod("i1"))
    w = Watch(api, pods_url(cp, ns) + "?watch=true&timeoutSeconds=1")
    w.done.wait(5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in w.events] == [("ADDED", "i1")]
    w = Watch(api, pods_url(cp, ns) + "?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
                                      "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
    w.done.wait(5)
    assert [e["type"] for e in w.events] == ["ADDED", "BOOKMARK"]
    assert w.events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    rv = api.get(pods_url(cp, ns)).json()["metadata"]["resourceVersion"]
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    wt = Watch(api, pods_url(cp, ns) + f"?watch=true&resourceVersion={rv}&timeoutSeconds=2",
               headers={"Accept": accept})
    api.post(pods_url(cp, ns), json=pod("i2"))
    ev = wt.wait_for(1)[0]
    assert ev["type"] == "ADDED" and ev["object"]["kind"] == "Table"
    assert ev["object"]["rows"][0]["cells"][0] == "i2"
    wt.close()


def test_concurrent_patches_without_resource_version_never_conflict(cp: ControlPlane, api: requests.Session,
                                                                    ns: str) -> None:
    """kubectl retries a 409 on PATCH forever, so unconditional patches must be retried server-side."""
    from concurrent.futures import ThreadPoolExecutor

    api.post(url(cp, f"/api/v1/namespaces/{ns}/configmaps"), json={"metadata": {"name": "hot"}})

    def one(i: int) -> int:
        s = cp.session()
        return s.patch(url(cp, f"/api/v1/namespaces/{ns}/configmaps/hot"),
                       data=json.dumps({"data": {f"k{i}": str(i)}}),
                       headers={"Content-Type": "application/merge-patch+json"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(40)))
    assert codes == [200] * 40
    data = api.get(url(cp, f"/api/v1/namespaces/{ns}/configmaps/hot")).json()["data"]
    assert data == {f"k{i}": str(i) for i in range(40)}
