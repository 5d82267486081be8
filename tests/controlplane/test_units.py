"""Pure-function pieces: patches, server-side apply ownership, selectors, quantities, durations."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kubeletpy.controlplane import managed
from kubeletpy.controlplane.errors import APIError
from kubeletpy.controlplane.patch import MergeKeys, json_patch, merge_patch, strategic_merge
from kubeletpy.controlplane.selectors import parse_field_selector, parse_label_selector
from kubeletpy.controlplane.strategy import human_duration
from kubeletpy.controlplane.validation import parse_quantity

KEYS = MergeKeys()


def base_pod() -> dict:
    return {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}, "finalizers": ["x/y"]},
            "spec": {"containers": [
                {"name": "main", "image": "busybox:1.36", "command": ["sleep"],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "side", "image": "nginx"}],
                "tolerations": [{"key": "k"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled",
                                                                             "status": "True"}]}}


def test_strategic_merge_by_keys_nulls_directives() -> None:
    patch = {"metadata": {"labels": {"a": None, "c": "3"}, "$deleteFromPrimitiveList/finalizers": ["x/y"]},
             "spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "main"}, {"name": "new"}],
                      "containers": [{"name": "main", "image": "busybox:1.37", "command": None,
                                      "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                                      "ports": [{"containerPort": 80, "name": "http"}]},
                                     {"name": "new", "image": "x"}],
                      "tolerations": [{"key": "other"}]},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    out = strategic_merge(base_pod(), patch, KEYS)
    assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert out["metadata"]["finalizers"] == []
    cs = out["spec"]["containers"]
    assert [c["name"] for c in cs] == ["side", "main", "new"]
    main = cs[1]
    assert main["image"] == "busybox:1.37" and "command" not in main
    assert main["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert main["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    assert out["spec"]["tolerations"] == [{"key": "other"}]  # no merge key: replaced
    assert out["status"]["conditions"][0] == {"type": "Ready", "status": "True"}
    assert len(out["status"]["conditions"]) == 2
    assert not any(k.startswith("$") for k in out["spec"])


def test_strategic_merge_replace_directive() -> None:
    out = strategic_merge(base_pod(), {"spec": {"containers": [{"name": "only", "image": "i"},
                                                               {"$patch": "replace"}]}}, KEYS)
    assert out["spec"]["containers"] == [{"name": "only", "image": "i"}]


def test_merge_patch_replaces_lists() -> None:
    out = merge_patch(base_pod(), {"spec": {"containers": [{"name": "x", "image": "y"}]},
                                   "metadata": {"labels": {"a": None}}})
    assert out["spec"]["containers"] == [{"name": "x", "image": "y"}]
    assert out["metadata"]["labels"] == {"b": "2"}


def test_json_patch_ops_and_errors() -> None:
    doc = {"a": {"b": [1, 2]}, "x/y": 1}
    out = json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3},
                           {"op": "replace", "path": "/x~1y", "value": 2},
                           {"op": "copy", "from": "/a/b", "path": "/c"},
                           {"op": "move", "from": "/c", "path": "/d"},
                           {"op": "remove", "path": "/a/b/0"},
                           {"op": "test", "path": "/d/2", "value": 3}])
    assert out == {"a": {"b": [2, 3]}, "x/y": 2, "d": [1, 2, 3]}
    assert doc == {"a": {"b": [1, 2]}, "x/y": 1}
    with pytest.raises(APIError) as e:
        json_patch(doc, [{"op": "test", "path": "/x~1y", "value": 5}])
    assert e.value.code == 422
    with pytest.raises(APIError) as e:
        json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert e.value.code == 422
    with pytest.raises(APIError) as e:
        json_patch(doc, {"op": "add"})
    assert e.value.code == 400


def test_apply_ownership_conflicts_force_and_removal() -> None:
    cfg1 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"l": "1"}},
            "data": {"a": "1", "b": "2"}}
    obj = managed.apply(None, cfg1, "alice", False, KEYS, "", "v1")
    assert obj["data"] == {"a": "1", "b": "2"}
    assert obj["metadata"]["managedFields"][0]["manager"] == "alice"
    # bob applies a different value for a field alice owns -> conflict
    cfg2 = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "X"}}
    with pytest.raises(APIError) as e:
        managed.apply(obj, cfg2, "bob", False, KEYS, "", "v1")
    assert e.value.code == 409 and e.value.details["causes"][0]["field"] == ".data.a"
    # same value: shared ownership, no conflict
    managed.apply(obj, {**cfg2, "data": {"a": "1"}}, "bob", False, KEYS, "", "v1")
    forced = managed.apply(obj, cfg2, "bob", True, KEYS, "", "v1")
    assert forced["data"]["a"] == "X"
    owners = {e["manager"]: e["fieldsV1"] for e in forced["metadata"]["managedFields"]}
    assert "f:a" not in owners["alice"]["f:data"] and "f:a" in owners["bob"]["f:data"]
    # alice re-applies without b: b is removed (only alice owned it); a stays (bob owns it)
    again = managed.apply(forced, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                                   "data": {}}, "alice", False, KEYS, "", "v1")
    assert again["data"] == {"a": "X"}
    assert "labels" not in again["metadata"] or "l" not in again["metadata"]["labels"]


def test_record_update_moves_ownership() -> None:
    old = {"metadata": {"name": "c"}, "data": {"a": "1"}}
    managed.record_update(None, old, "creator", KEYS, "", "v1")
    new = {"metadata": {"name": "c", "managedFields": old["metadata"]["managedFields"]}, "data": {"a": "2", "b": "3"}}
    managed.record_update(old, new, "editor", KEYS, "", "v1")
    owners = {e["manager"]: managed.to_paths(e["fieldsV1"]) for e in new["metadata"]["managedFields"]}
    assert owners == {"editor": {("f:data", "f:a"), ("f:data", "f:b")}}


def test_label_selectors() -> None:
    m = parse_label_selector("app=web,tier!=db,env in (a, b),!legacy,has")
    assert m({"app": "web", "env": "a", "has": ""})
    assert not m({"app": "web", "env": "c", "has": ""})
    assert not m({"app": "web", "env": "a", "has": "", "legacy": "1"})
    assert parse_label_selector("x notin (1)")({"x": "2"})
    assert parse_label_selector("") is None
    with pytest.raises(APIError):
        parse_label_selector("a in b")


def test_field_selectors() -> None:
    terms = parse_field_selector("metadata.name=x,status.phase!=Failed", frozenset({"metadata.name", "status.phase"}),
                                 "pods")
    assert terms == [("metadata.name", True, "x"), ("status.phase", False, "Failed")]
    with pytest.raises(APIError) as e:
        parse_field_selector("spec.foo=1", frozenset({"metadata.name"}), "pods")
    assert e.value.code == 400


@pytest.mark.parametrize("q,val", [("100m", Decimal("0.1")), ("64Mi", 64 * 2**20), ("1e3", 1000), ("2", 2),
                                   ("1.5Gi", Decimal("1.5") * 2**30), (0.5, Decimal("0.5")), ("abc", None),
                                   ("1Qi", None)])
def test_quantities(q, val) -> None:
    assert parse_quantity(q) == val


def test_human_duration() -> None:
    assert [human_duration(s) for s in (45, 200, 3600, 5.5 * 3600, 30 * 3600, 76 * 3600, 45 * 86400)] == [
        "45s", "3m20s", "60m", "5h30m", "30h", "3d4h", "45d"]
