"""Pure logic of the agent: no daemons, no root-only calls."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubeletpy.agent import admission, envvars, gc, probes, qos, quantity, resources, staticpods
from kubeletpy.agent import labels as L
from kubeletpy.agent.backoff import Backoff
from kubeletpy.agent.server import render_log
from kubeletpy.agent.status import (
    EXITED,
    RUNNING,
    ContainerView,
    CRIContainer,
    build_status,
    merge_diff,
    pod_phase,
    status_patch,
)


def ctr(name: str = "c", requests: dict | None = None, limits: dict | None = None, **kw: object) -> dict:
    res: dict = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "image": "busybox", "resources": res, **kw}


def pod(*containers: dict, init: list[dict] | None = None, **spec: object) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"a": "b"},
                         "annotations": {"x": "y"}},
            "spec": {"containers": list(containers), "initContainers": init or [], **spec}, "status": {}}


# ------------------------------------------------------------------ quantities, QoS, resources

@pytest.mark.parametrize("q,milli", [("100m", 100), ("0.1", 100), ("1", 1000), ("2.5", 2500), (1, 1000),
                                     ("1500u", 2)])
def test_cpu_quantities(q: str, milli: int) -> None:
    assert quantity.milli(q) == milli


@pytest.mark.parametrize("q,n", [("64Mi", 64 << 20), ("1Gi", 1 << 30), ("1G", 10**9), ("128974848", 128974848),
                                 ("1e3", 1000), ("129e6", 129_000_000), ("1Ki", 1024), ("0.5Gi", 1 << 29)])
def test_memory_quantities(q: str, n: int) -> None:
    assert quantity.value(q) == n


def test_qos_classes() -> None:
    assert qos.qos_class(pod(ctr())) == qos.BESTEFFORT
    g = ctr(limits={"cpu": "1", "memory": "1Gi"})  # requests default to limits
    assert qos.qos_class(pod(g)) == qos.GUARANTEED
    assert qos.qos_class(pod(g, ctr("b"))) == qos.BURSTABLE
    assert qos.qos_class(pod(ctr(requests={"cpu": "100m"}))) == qos.BURSTABLE
    assert qos.qos_class(pod(ctr(requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "2", "memory": "1Gi"}))) \
        == qos.BURSTABLE
    # an init container without limits makes a pod of guaranteed containers burstable
    assert qos.qos_class(pod(g, init=[ctr("i", requests={"cpu": "1"})])) == qos.BURSTABLE


def test_pod_requests_take_the_largest_init_container() -> None:
    p = pod(ctr("a", requests={"cpu": "100m", "memory": "10Mi"}), ctr("b", requests={"cpu": "200m"}),
            init=[ctr("i", requests={"cpu": "500m", "memory": "1Mi"})])
    assert qos.pod_requests(p) == (500, 10 << 20)


def test_pod_limits_unbounded_when_a_container_has_none() -> None:
    assert qos.pod_limits(pod(ctr("a", limits={"cpu": "1", "memory": "1Gi"}), ctr("b", limits={"cpu": "1"}))) \
        == (2000, None)


def test_cgroup_parent_by_qos() -> None:
    assert qos.pod_cgroup_parent(pod(ctr()), "kubepods") == "/kubepods/besteffort/podu-1"
    assert qos.pod_cgroup_parent(pod(ctr(limits={"cpu": "1", "memory": "1Gi"})), "kp/kubepods") == \
        "/kp/kubepods/podu-1"
    assert qos.pod_cgroup_parent(pod(ctr(requests={"cpu": "1"}))) == "/kubepods/burstable/podu-1"


def test_resources_to_cri() -> None:
    r = resources.container_resources(ctr(requests={"cpu": "250m", "memory": "64Mi"},
                                          limits={"cpu": "500m", "memory": "128Mi"}), qos.BURSTABLE, 1 << 30)
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes) == (256, 50000, 100000, 128 << 20)
    assert r.oom_score_adj == 1000 - (1000 * (64 << 20)) // (1 << 30)
    be = resources.container_resources(ctr(), qos.BESTEFFORT, 1 << 30)
    assert (be.cpu_shares, be.cpu_quota, be.cpu_period, be.memory_limit_in_bytes, be.oom_score_adj) == \
        (2, 0, 0, 0, 1000)
    assert resources.container_resources(ctr(limits={"cpu": "1m"}), qos.BURSTABLE, 1).cpu_quota == 1000  # minimum
    g = resources.container_resources(ctr(limits={"cpu": "2", "memory": "1Gi"}), qos.GUARANTEED, 1 << 33)
    assert (g.cpu_shares, g.oom_score_adj) == (2048, -997)
    assert resources.oom_score_adj(qos.BURSTABLE, 1 << 30, 1 << 30) == 2


# ------------------------------------------------------------------ env

def lookup_factory(objs: dict) -> envvars.Lookup:
    return lambda kind, ns, name: objs.get((kind, ns, name))


def test_env_resolution_in_order_with_expansion() -> None:
    objs = {("ConfigMap", "ns", "cm"): {"data": {"A": "from-cm", "B": "b"}},
            ("Secret", "ns", "s"): {"data": {"PASS": base64.b64encode(b"hunter2").decode()}}}
    c = ctr(envFrom=[{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            env=[{"name": "X", "value": "x"},
                 {"name": "Y", "value": "$(X)-$(CM_A)-$(MISSING)-$$(X)"},
                 {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                 {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                 {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                 {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
                 {"name": "CMB", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "B"}}},
                 {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "PASS"}}},
                 {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}}])
    env = dict(envvars.resolve(pod(c), c, lookup_factory(objs), pod_ip="10.1.2.3", node_name="n1"))
    assert env == {"CM_A": "from-cm", "CM_B": "b", "X": "x", "Y": "x-from-cm-$(MISSING)-$(X)", "NAME": "p",
                   "NS": "ns", "UID": "u-1", "IP": "10.1.2.3", "NODE": "n1", "LBL": "b", "CMB": "b",
                   "PASS": "hunter2"}
    cmd, args = envvars.command_and_args({"command": ["echo", "$(X)"], "args": ["$(NAME)"]}, env)
    assert (cmd, args) == (["echo", "x"], ["p"])


def test_env_missing_reference_is_an_error() -> None:
    c = ctr(env=[{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}])
    with pytest.raises(envvars.EnvError, match='configmap "cm" not found'):
        envvars.resolve(pod(c), c, lookup_factory({}))
    objs = {("ConfigMap", "ns", "cm"): {"data": {}}}
    with pytest.raises(envvars.EnvError, match='has no key "k"'):
        envvars.resolve(pod(c), c, lookup_factory(objs))


def test_resource_field_ref() -> None:
    c = ctr(limits={"memory": "64Mi"}, env=[
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}])
    env = dict(envvars.resolve(pod(c), c, lookup_factory({}), node_alloc={"cpu_milli": 2000}))
    assert env == {"MEM": "64", "CPU": "2"}


# ------------------------------------------------------------------ backoff

def test_crashloop_backoff_sequence() -> None:
    now = [1000.0]
    b = Backoff(initial=10, maximum=40, reset_after=600, clock=lambda: now[0])
    key = ("uid", "c")
    assert b.remaining(key, since=now[0]) == 0  # first crash: restart at once
    assert b.next(key) == 10
    delays = []
    for _ in range(5):
        finished = now[0] + 1  # crashes a second after each start
        now[0] = finished
        delays.append(b.remaining(key, since=finished))
        now[0] += delays[-1]
        assert b.remaining(key, since=finished) == 0
        b.next(key)
    assert delays == [10, 20, 40, 40, 40]
    b.forget_pod("uid")
    assert b.remaining(key, since=now[0]) == 0


def test_backoff_resets_after_a_quiet_period() -> None:
    now = [0.0]
    b = Backoff(initial=10, maximum=300, reset_after=600, clock=lambda: now[0])
    for _ in range(4):
        b.next(("u", "c"))
    assert b.current_delay(("u", "c")) == 80
    now[0] += 2 * 300 + 600 + 1
    assert b.next(("u", "c")) == 10


# ------------------------------------------------------------------ probes

def test_probe_thresholds() -> None:
    spec = probes.ProbeSpec.from_api(probes.READINESS, {"exec": {"command": ["true"]}, "successThreshold": 2,
                                                         "failureThreshold": 2, "periodSeconds": 3})
    assert (spec.period, spec.timeout, spec.initial_delay) == (3, 1, 0)
    st = probes.ProbeState(spec)
    assert st.result == probes.FAILURE  # readiness starts not ready
    assert not st.observe(True)
    assert st.observe(True) and st.result == probes.SUCCESS
    assert not st.observe(False)  # one failure is tolerated
    assert st.observe(False) and st.result == probes.FAILURE
    live = probes.ProbeState(probes.ProbeSpec.from_api(probes.LIVENESS, {"tcpSocket": {"port": 1},
                                                                          "successThreshold": 5}))
    assert live.result == probes.SUCCESS and live.spec.success_threshold == 1  # liveness: threshold forced to 1
    assert probes.ProbeState(probes.ProbeSpec.from_api(probes.STARTUP, {})).result == probes.UNKNOWN


def test_probe_ports_by_name() -> None:
    assert probes.resolve_port("http", {"http": 8080}) == 8080
    assert probes.resolve_port("81", {}) == 81
    with pytest.raises(ValueError):
        probes.resolve_port("nope", {})


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probe_runners_against_local_servers() -> None:
    async def main() -> list[tuple[bool, str]]:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the tcpSocket probe connects and hangs up
                w.close()
                return
            code = b"200 OK" if b"GET /ok " in head and b"X-Probe: yes" in head else b"500 Nope"
            w.write(b"HTTP/1.1 " + code + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        target = probes.ProbeTarget("127.0.0.1", "cid", {"web": port})

        async def fake_exec(cid: str, cmd: list[str], timeout: float) -> tuple[int, bytes]:
            return (0 if cmd == ["true"] else 1), b"out"

        target.exec_sync = fake_exec
        hdr = [{"name": "X-Probe", "value": "yes"}]
        runs = [
            probes.ProbeSpec("readiness", {"httpGet": {"path": "/ok", "port": "web", "httpHeaders": hdr}}),
            probes.ProbeSpec("readiness", {"httpGet": {"path": "/bad", "port": port}}),
            probes.ProbeSpec("liveness", {"tcpSocket": {"port": port}}),
            probes.ProbeSpec("liveness", {"tcpSocket": {"port": closed_port()}}),
            probes.ProbeSpec("liveness", {"exec": {"command": ["true"]}}),
            probes.ProbeSpec("liveness", {"exec": {"command": ["false"]}}),
        ]
        out = [await probes.run_probe(s, target) for s in runs]
        srv.close()
        await srv.wait_closed()
        return out

    results = [ok for ok, _ in asyncio.run(main())]
    assert results == [True, False, True, False, True, False]


def test_grpc_probe() -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    async def main() -> tuple[bool, bool]:
        server = grpc.aio.server()
        h = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(h, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        set_status = h.set("svc", health_pb2.HealthCheckResponse.SERVING)
        if asyncio.iscoroutine(set_status):
            await set_status
        target = probes.ProbeTarget("127.0.0.1", "cid", {})
        ok, _ = await probes.run_probe(probes.ProbeSpec("liveness", {"grpc": {"port": port, "service": "svc"}},
                                                        timeout=3), target)
        bad, _ = await probes.run_probe(probes.ProbeSpec("liveness", {"grpc": {"port": port, "service": "x"}},
                                                         timeout=3), target)
        await server.stop(0)
        return ok, bad

    assert asyncio.run(main()) == (True, False)


# ------------------------------------------------------------------ admission

def test_admission() -> None:
    alloc = admission.Allocatable(cpu_milli=1000, memory=1 << 30, pods=3)
    small = pod(ctr(requests={"cpu": "400m", "memory": "100Mi"}))
    assert admission.admit(small, [small], alloc) is None
    r = admission.admit(small, [small, small], alloc)
    assert r is not None and r.reason == "OutOfcpu"
    big_mem = pod(ctr(requests={"memory": "2Gi"}))
    assert admission.admit(big_mem, [], alloc).reason == "OutOfmemory"  # type: ignore[union-attr]
    assert admission.admit(pod(ctr()), [pod(ctr())] * 3, alloc).reason == "OutOfpods"  # type: ignore[union-attr]
    hp = pod(ctr(ports=[{"containerPort": 80, "hostPort": 8080}]))
    assert admission.admit(hp, [hp], alloc).reason == "NodePorts"  # type: ignore[union-attr]
    other_ip = pod(ctr(ports=[{"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]))
    udp = pod(ctr(ports=[{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]))
    assert admission.admit(udp, [hp], alloc) is None
    assert admission.admit(other_ip, [pod(ctr(ports=[{"containerPort": 80, "hostPort": 8080,
                                                      "hostIP": "10.0.0.2"}]))], alloc) is None
    assert admission.admit(other_ip, [hp], alloc).reason == "NodePorts"  # type: ignore[union-attr]
    hostnet = pod(ctr(ports=[{"containerPort": 8080}]), hostNetwork=True)
    assert admission.admit(hostnet, [hp], alloc).reason == "NodePorts"  # type: ignore[union-attr]


# ------------------------------------------------------------------ status

def running(cid: str = "c1", restarts: int = 0) -> CRIContainer:
    return CRIContainer(cid, RUNNING, started_at=1_700_000_000 * 10**9, image_ref="sha256:abc",
                        restart_count=restarts)


def exited(cid: str = "c0", code: int = 1, reason: str = "") -> CRIContainer:
    return CRIContainer(cid, EXITED, exit_code=code, reason=reason, started_at=1_700_000_000 * 10**9,
                        finished_at=1_700_000_005 * 10**9)


def test_phase_rules() -> None:
    run = {"state": {"running": {}}}
    ok = {"state": {"terminated": {"exitCode": 0}}}
    bad = {"state": {"terminated": {"exitCode": 1}}}
    waiting = {"state": {"waiting": {"reason": "ContainerCreating"}}}
    crashloop = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}}
    assert pod_phase("Always", [], [run]) == "Running"
    assert pod_phase("Always", [], [waiting]) == "Pending"
    assert pod_phase("Always", [], [crashloop]) == "Running"
    assert pod_phase("Never", [], [ok]) == "Succeeded"
    assert pod_phase("Never", [], [ok, bad]) == "Failed"
    assert pod_phase("OnFailure", [], [ok, bad]) == "Running"
    assert pod_phase("OnFailure", [], [ok, ok]) == "Succeeded"
    assert pod_phase("Always", [run], [waiting]) == "Pending"  # still initializing
    assert pod_phase("Never", [bad], [waiting]) == "Failed"
    assert pod_phase("Always", [ok], [run]) == "Running"


def test_build_status_running_ready() -> None:
    p = pod(ctr("a"), ctr("b"))
    p["status"] = {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"}]}
    views = [ContainerView("a", "busybox", running("ca"), ready=True, started=True),
             ContainerView("b", "busybox", running("cb", 2), exited("old"), restart_count=2, ready=False,
                           started=True)]
    st = build_status(p, [], views, pod_ips=["10.0.0.5"], host_ip="192.168.1.1", start_time="S", now="NOW")
    assert st["phase"] == "Running" and st["podIP"] == "10.0.0.5" and st["podIPs"] == [{"ip": "10.0.0.5"}]
    assert st["hostIP"] == "192.168.1.1" and st["startTime"] == "S" and st["qosClass"] == "BestEffort"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["PodScheduled"]["lastTransitionTime"] == "T0"
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["message"] == "containers with unready status: [b]"
    a, b = st["containerStatuses"]
    assert a["state"] == {"running": {"startedAt": "2023-11-14T22:13:20Z"}} and a["ready"] and a["started"]
    assert a["containerID"] == "kubeletpy://ca" and a["imageID"] == "sha256:abc"
    assert b["restartCount"] == 2 and b["lastState"]["terminated"]["exitCode"] == 1
    assert b["lastState"]["terminated"]["reason"] == "Error"
    views[1].ready = True
    st2 = build_status({**p, "status": st}, [], views, pod_ips=["10.0.0.5"], host_ip="h", start_time="S",
                       now="LATER")
    conds2 = {c["type"]: c for c in st2["conditions"]}
    assert conds2["Ready"]["status"] == "True" and conds2["Ready"]["lastTransitionTime"] == "LATER"
    assert conds2["Initialized"]["lastTransitionTime"] == "NOW"  # unchanged conditions keep their time


def test_build_status_crashloop_and_terminal() -> None:
    p = pod(ctr("a"), restartPolicy="Always")
    v = ContainerView("a", "busybox", exited("x", 1), restart_count=3, will_restart=True,
                      waiting_reason="CrashLoopBackOff", waiting_message="back-off 20s")
    st = build_status(p, [], [v], pod_ips=["10.0.0.5"], host_ip="h", start_time="S")
    cs = st["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}
    assert cs["lastState"]["terminated"]["exitCode"] == 1 and st["phase"] == "Running"
    p = pod(ctr("a"), restartPolicy="Never")
    st = build_status(p, [], [ContainerView("a", "busybox", exited("x", 0))], pod_ips=[], host_ip="h",
                      start_time="S")
    assert st["phase"] == "Succeeded"
    assert st["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert {c["type"]: c.get("reason") for c in st["conditions"]}["Ready"] == "PodCompleted"
    oom = build_status(p, [], [ContainerView("a", "b", exited("x", 137, "OOMKilled"))], pod_ips=[], host_ip="h",
                       start_time="S")
    assert oom["phase"] == "Failed" and oom["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    rej = build_status(pod(ctr("a")), [], [ContainerView("a", "b")], pod_ips=[], host_ip="h", start_time=None,
                       terminal=("Failed", "OutOfcpu", "Node didn't have enough resource: cpu"))
    assert (rej["phase"], rej["reason"]) == ("Failed", "OutOfcpu") and "startTime" not in rej


def test_init_containers_status() -> None:
    p = pod(ctr("main"), init=[ctr("i1"), ctr("i2")])
    st = build_status(p, [ContainerView("i1", "b", exited("i1", 0)), ContainerView("i2", "b", running("i2"))],
                      [ContainerView("main", "b", waiting_reason="PodInitializing")], pod_ips=["1.2.3.4"],
                      host_ip="h", start_time="S")
    assert st["phase"] == "Pending"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Initialized"]["status"] == "False"
    assert conds["Initialized"]["message"] == "containers with incomplete status: [i2]"
    assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert st["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"


def test_merge_diff_and_status_patch() -> None:
    assert merge_diff({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 2}}) == {"b": {"c": 2, "d": None}}
    assert merge_diff({"l": [1, 2]}, {"l": [1]}) == {"l": [1]}
    assert merge_diff({"a": 1}, {"a": 1}) == {}
    # keys the agent does not own (e.g. nominatedNodeName) are never touched
    assert status_patch({"phase": "Pending", "nominatedNodeName": "x"}, {"phase": "Running"}) == {"phase": "Running"}
    assert status_patch({"phase": "Running", "podIP": "1"}, {"phase": "Running", "podIP": "1"}) == {}


# ------------------------------------------------------------------ gc, static pods, labels, logs

def test_dead_container_selection() -> None:
    def c(cid: str, restarts: int, state: int, name: str = "a") -> SimpleNamespace:
        return SimpleNamespace(id=cid, state=state, created_at=restarts,
                               labels={L.POD_UID: "u", L.CONTAINER_NAME: name, L.CONTAINER_KIND: "regular"},
                               annotations={L.RESTART_COUNT: str(restarts)})

    ex, run = 2, 1
    cs = [c("a0", 0, ex), c("a1", 1, ex), c("a2", 2, ex), c("a3", 3, run), c("b0", 0, ex, "b"), c("b1", 1, ex, "b")]
    assert sorted(gc.dead_to_remove(cs, keep=1)) == ["a0", "a1"]  # a3 runs, a2 is its lastState
    assert gc.dead_to_remove(cs, keep=5) == []


def test_image_gc_selection() -> None:
    def img(i: str, size: int) -> SimpleNamespace:
        return SimpleNamespace(id=i, size=size, repo_tags=[f"{i}:latest"], repo_digests=[], pinned=False)

    imgs = [img("a", 30), img("b", 20), img("c", 10)]
    assert images_ids(gc.images_to_remove(imgs, set(), used=80, capacity=100, high=0.85, low=0.8)) == []
    assert images_ids(gc.images_to_remove(imgs, {"a"}, used=90, capacity=100, high=0.85, low=0.8)) == ["b"]
    assert images_ids(gc.images_to_remove(imgs, set(), used=100, capacity=100, high=0.85, low=0.5)) == ["a", "b"]


def test_image_gc_spares_images_first_seen_recently() -> None:
    def img(i: str) -> SimpleNamespace:
        return SimpleNamespace(id=i, size=1, repo_tags=[], repo_digests=[], pinned=False)

    agent = SimpleNamespace(image_first_seen={}, cfg=SimpleNamespace(image_min_age=120.0))
    assert gc.old_enough(agent, [img("a")], now=1000.0) == []  # just seen: too young
    assert images_ids(gc.old_enough(agent, [img("a"), img("b")], now=1119.0)) == []
    assert images_ids(gc.old_enough(agent, [img("a"), img("b")], now=1120.0)) == ["a"]
    assert images_ids(gc.old_enough(agent, [img("b")], now=1300.0)) == ["b"]  # a is gone: forgotten
    assert gc.old_enough(agent, [img("a")], now=1301.0) == []  # back again: young again
    assert agent.image_first_seen == {"a": 1301.0}


def images_ids(imgs: list) -> list[str]:
    return [i.id for i in imgs]


def test_static_pod_manifest(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "web.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
                                "spec: {containers: [{name: c, image: busybox}]}\n")
    (d / "notes.txt").write_text("ignored")
    pods = staticpods.scan(d, "n1")
    assert len(pods) == 1
    (uid, p), = pods.items()
    assert p["metadata"]["name"] == "web-n1" and p["spec"]["nodeName"] == "n1"
    assert staticpods.scan(d, "n1").keys() == pods.keys()  # same file, same uid (adoption after restart)
    (d / "web.yaml").write_text((d / "web.yaml").read_text() + "# edited\n")
    assert staticpods.scan(d, "n1").keys() != pods.keys()
    m = staticpods.mirror_of(p)
    assert staticpods.is_mirror(m) and "uid" not in m["metadata"]
    assert m["metadata"]["annotations"][L.CONFIG_MIRROR] == uid


def test_container_hash_tracks_spec() -> None:
    a = ctr("a")
    assert L.container_hash(a) == L.container_hash(dict(a))
    assert L.container_hash(a) != L.container_hash({**a, "image": "other"})


def test_cri_log_rendering() -> None:
    lines = [b"2026-01-01T00:00:01.000000000Z stdout F one\n",
             b"2026-01-01T00:00:02.000000000Z stdout P tw\n",
             b"2026-01-01T00:00:02.500000000Z stderr F err\n",
             b"2026-01-01T00:00:03.000000000Z stdout F o\n",
             b"2026-01-01T00:00:04.000000000Z stdout F four\n"]
    assert render_log(lines, timestamps=False, since=None, tail=None) == [b"one\n", b"err\n", b"two\n", b"four\n"]
    assert render_log(lines, timestamps=False, since=None, tail=2) == [b"two\n", b"four\n"]
    assert render_log(lines, timestamps=True, since=None, tail=1) == [b"2026-01-01T00:00:04.000000000Z four\n"]
    import datetime as dt

    since = dt.datetime(2026, 1, 1, 0, 0, 2, 400000, tzinfo=dt.UTC).timestamp()
    assert render_log(lines, timestamps=False, since=since, tail=None) == [b"err\n", b"four\n"]


def test_registry_auth_from_pull_secrets() -> None:
    from kubeletpy.agent.agent import registry_auth, registry_host

    assert registry_host("busybox") == "docker.io" and registry_host("library/busybox:1") == "docker.io"
    assert registry_host("127.0.0.1:5000/x/y:1") == "127.0.0.1:5000"
    assert registry_host("kubeletpy.local/busybox:latest") == "kubeletpy.local"

    def secret(auths: dict) -> dict:
        return {"type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(json.dumps({"auths": auths}).encode()).decode()}}

    sec = secret({"https://127.0.0.1:5000": {"auth": base64.b64encode(b"u:p").decode()},
                  "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}})
    assert registry_auth([sec], "127.0.0.1:5000/app:1") == {
        "server_address": "127.0.0.1:5000", "auth": base64.b64encode(b"u:p").decode(), "username": "u", "password": "p"}
    assert registry_auth([sec], "busybox")["username"] == "hub"  # type: ignore[index]
    assert registry_auth([sec], "quay.io/x") is None
    assert registry_auth([], "busybox") is None


def test_cli_defaults_to_the_local_control_plane(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kubeletpy up` starts `kubeletpy agent` without flags: it joins this host's control plane."""
    from pathlib import Path

    from kubeletpy.cli import agent as cli_agent
    from kubeletpy.cli import build_parser
    from kubeletpy.controlplane import app, kubeconfig

    d = Path(str(tmp_path))
    kubeconfig.write(d / "admin.kubeconfig", "https://127.0.0.1:7443", b"CA-PEM", "admin-token", "admin")
    (d / "cp").mkdir()
    (d / "cp" / "join-token").write_text("join-token\n")
    monkeypatch.setattr(app, "DEFAULT_KUBECONFIG", d / "admin.kubeconfig")
    monkeypatch.setattr(app, "DEFAULT_DATA_DIR", d / "cp")
    args = build_parser("agent").parse_args(["agent", "--root-dir", str(d / "agent")])
    cli_agent.local_defaults(args)
    assert (args.server, args.token) == ("https://127.0.0.1:7443", "join-token")
    assert args.ca_file.read_bytes() == b"CA-PEM"
    cfg = cli_agent.config_from_args(args)
    assert cfg.server == "https://127.0.0.1:7443" and cfg.max_pods == 110 and cfg.port == 10250  # type: ignore[attr-defined]


def test_eviction_thresholds_parse_like_the_kubelets() -> None:
    from kubeletpy.agent import eviction as ev

    th = ev.parse_thresholds(ev.DEFAULT_HARD)
    assert th["memory.available"].quantity == 100 * 2**20
    assert th["nodefs.available"].fraction == 0.10 and th["pid.available"].fraction == 0.10
    assert th["nodefs.inodesFree"].fraction == 0.05 and all(t.hard for t in th.values())
    assert ev.parse_thresholds("pid.available<1000, memory.available<1Gi")["pid.available"].quantity == 1000
    assert ev.parse_thresholds("nodefs.inodesFree<5000")["nodefs.inodesFree"].text() == "5000"
    assert ev.parse_thresholds("") == {}
    for bad in ("memory.available>1Gi", "cpu.available<1", "nodefs.available<150%", "memory.available<lots"):
        with pytest.raises(ev.ThresholdError, match="--eviction-hard"):
            ev.parse_thresholds(bad)


def test_soft_eviction_thresholds_need_grace_periods() -> None:
    from kubeletpy.agent import eviction as ev

    assert [ev.parse_duration(t) for t in ("0", "90s", "1m30s", "1h", "1.5s", "250ms")] == [0, 90, 90, 3600, 1.5,
                                                                                          0.25]
    for bad in ("", "90", "1x", "m", "-"):
        with pytest.raises(ValueError):
            ev.parse_duration(bad)
    soft = ev.parse_soft("memory.available<1Gi,nodefs.available<20%",
                         "memory.available=1m30s, nodefs.available=2m")
    assert soft["memory.available"].grace == 90 and soft["nodefs.available"].grace == 120
    assert not soft["memory.available"].hard and soft["memory.available"].quantity == 2**30
    assert ev.parse_soft("", "") == {}
    for text, grace, why in (
            ("memory.available<1Gi", "", "grace period must be specified for the soft eviction threshold "
                                         "memory.available"),
            ("memory.available<1Gi", "memory.available=1m,pid.available=1m", "pid.available has no --eviction-soft"),
            ("memory.available<1Gi", "memory.available=soon", "bad duration 'soon'"),
            ("memory.available<1Gi", "memory.available:1m", "want <signal>=<duration>"),
            ("memory.available=1Gi", "memory.available=1m", "--eviction-soft: 'memory.available=1Gi'")):
        with pytest.raises(ev.ThresholdError, match=re.escape(why)):
            ev.parse_soft(text, grace)


def test_eviction_manager_grace_periods_and_pressure_transition() -> None:
    """Hard thresholds act at once; soft ones after staying crossed for their grace period;
    the condition appears as soon as either is crossed and stays for the transition period."""
    from kubeletpy.agent import eviction as ev

    mgr = ev.Manager(ev.parse_thresholds("memory.available<1Gi"),
                     ev.parse_soft("memory.available<2Gi,nodefs.available<50%",
                                   "memory.available=30s,nodefs.available=10s"), transition=60)

    def obs(mem_gib: float, disk_free: float = 80) -> dict[str, ev.Observation]:
        return {"memory.available": ev.Observation("memory.available", mem_gib * 2**30, 16 * 2**30),
                "nodefs.available": ev.Observation("nodefs.available", disk_free, 100)}

    assert mgr.decide(obs(4), now=0) == ev.Decision(set())
    d = mgr.decide(obs(1.5), now=10)  # soft crossed: pressure, but no eviction yet
    assert d.conditions == {"MemoryPressure"} and d.act_on is None
    assert mgr.decide(obs(1.5), now=39).act_on is None
    d = mgr.decide(obs(1.5), now=40)  # crossed for its 30 s
    assert d.act_on is not None and d.act_on.signal == "memory.available" and not d.act_on.hard
    d = mgr.decide(obs(0.5), now=41)  # hard beats soft
    assert d.act_on is not None and d.act_on.hard
    d = mgr.decide(obs(4), now=50)  # recovered: the condition holds for the transition period
    assert d.conditions == {"MemoryPressure"} and d.act_on is None
    assert mgr.decide(obs(1.5), now=60).act_on is None  # the soft clock restarted
    assert mgr.decide(obs(4), now=130).conditions == set()
    # memory is the first concern, then disk
    mgr.decide(obs(1.5, disk_free=10), now=200)
    d = mgr.decide(obs(1.5, disk_free=10), now=230)
    assert d.conditions == {"MemoryPressure", "DiskPressure"} and d.act_on.signal == "memory.available"
    # no transition period: conditions follow the measurement
    now0 = ev.Manager(ev.parse_thresholds("memory.available<1Gi"), transition=0)
    assert now0.decide(obs(0.5), now=1).conditions == {"MemoryPressure"}
    assert now0.decide(obs(4), now=1.5).conditions == set()


def test_eviction_victim_grace_and_critical_pods() -> None:
    from kubeletpy.agent import eviction as ev

    hard = ev.parse_thresholds("memory.available<1Gi")["memory.available"]
    soft = ev.parse_soft("memory.available<2Gi", "memory.available=1m")["memory.available"]
    pod = {"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 45}}
    assert ev.victim_grace(pod, hard, 10) == 0
    assert ev.victim_grace(pod, soft, 10) == 10 and ev.victim_grace(pod, soft, 0) == 45
    assert ev.victim_grace({"spec": {}}, soft, 0) == 30 and ev.victim_grace({"spec": {}}, soft, 60) == 30
    assert ev.is_critical({"metadata": {}, "spec": {"priority": 2000001000}})
    assert not ev.is_critical({"metadata": {}, "spec": {"priority": 1000}})
    assert ev.is_critical({"metadata": {"annotations": {L.CONFIG_SOURCE: "file"}}, "spec": {}})


def test_eviction_pressure_and_ranking() -> None:
    from kubeletpy.agent import eviction as ev

    th = ev.parse_thresholds("memory.available<1Gi,nodefs.available<10%")
    obs = {"memory.available": ev.Observation("memory.available", 2 * 2**30, 8 * 2**30),
           "nodefs.available": ev.Observation("nodefs.available", 5, 100),
           "pid.available": ev.Observation("pid.available", 1, 100)}
    assert ev.crossed(obs, th) == ["nodefs.available"]  # pid has no threshold here

    def pod(name: str, requests: dict | None = None, limits: dict | None = None) -> dict:
        res = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
        return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "resources": res}]}}

    guaranteed = pod("g", {"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})
    burstable = pod("b", {"memory": "100Mi"})
    best = pod("be")
    cands = [ev.Candidate(guaranteed, 2 * 2**30, 2**30),           # over its request: first
             ev.Candidate(burstable, 50 * 2**20, 100 * 2**20),
             ev.Candidate(best, 10 * 2**20, 0),                     # over (0 requested): second, less over
             ev.Candidate(pod("be2"), 0, 0)]
    assert [c.pod["metadata"]["name"] for c in ev.rank(cands)] == ["g", "be", "be2", "b"]
    # priority comes between "over its request" and "how far over"
    important = pod("important")
    important["spec"]["priority"] = 1000
    cands.append(ev.Candidate(important, 8 * 2**30, 0))
    assert [c.pod["metadata"]["name"] for c in ev.rank(cands)] == ["g", "be", "important", "be2", "b"]
    # PIDs: priority, then process count
    by_pids = ev.rank([ev.Candidate(important, 500, 0), ev.Candidate(best, 3, 0), ev.Candidate(burstable, 40, 0)],
                      "pid.available")
    assert [c.pod["metadata"]["name"] for c in by_pids] == ["b", "be", "important"]
    msg = ev.message("nodefs.available", th["nodefs.available"], obs["nodefs.available"], cands[2])
    assert msg.startswith("The node was low on resource: ephemeral-storage. Threshold quantity: 10%")


def test_admission_under_node_pressure() -> None:
    alloc = admission.Allocatable(4000, 8 * 2**30, 110)
    best = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    burst = {"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "resources": {
        "requests": {"memory": "10Mi"}}}]}}
    static = {"metadata": {"name": "s", "annotations": {L.CONFIG_SOURCE: "file"}}, "spec": best["spec"]}
    rej = admission.admit(best, [], alloc, {"MemoryPressure"})
    assert rej is not None and rej.reason == "Evicted" and "MemoryPressure" in rej.message
    assert admission.admit(burst, [], alloc, {"MemoryPressure"}) is None
    assert admission.admit(burst, [], alloc, {"DiskPressure"}).reason == "Evicted"
    assert admission.admit(static, [], alloc, {"DiskPressure", "MemoryPressure"}) is None
    critical = {"metadata": {"name": "k"}, "spec": {**best["spec"], "priority": 2000000000}}
    assert admission.admit(critical, [], alloc, {"PIDPressure", "MemoryPressure"}) is None


def test_pod_process_count_from_the_pod_cgroup(tmp_path: Path) -> None:
    """PID-pressure ranking counts a pod's processes in its cgroup: a real pids cgroup on this
    host with two processes in it; and, where pids is not mounted, the tasks of the memory
    hierarchy below the pod (a fake tree, since this host has the pids controller)."""
    from kubeletpy.agent import eviction as ev

    root = f"kpt-evict-{os.getpid()}"
    pod = {"metadata": {"uid": "u1"}, "spec": {"containers": [{"name": "c"}]}}
    cg = Path("/sys/fs/cgroup/pids") / root / "besteffort" / "podu1"
    procs = []
    try:
        cg.mkdir(parents=True)
        for _ in range(2):
            p = subprocess.Popen(["sleep", "60"])
            procs.append(p)
            (cg / "cgroup.procs").write_text(str(p.pid))
        assert ev.pod_processes(pod, root) == 2
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for d in (cg, cg.parent, cg.parent.parent):
            if d.exists():
                d.rmdir()
    fake = tmp_path / "cg"
    for sub, pids in (("podu1", "1\n"), ("podu1/ctr-a", "7\n8\n"), ("podu1/ctr-b", "")):
        d = fake / "memory" / "kubepods" / "besteffort" / sub
        d.mkdir(parents=True)
        (d / "cgroup.procs").write_text(pids)
    assert ev.pod_processes(pod, "kubepods", fs=str(fake)) == 3
    # a v2 tree without the pids controller delegated: the unified tree's cgroup.procs
    v2 = tmp_path / "v2"
    for sub, pids in (("podu1", ""), ("podu1/ctr", "7\n8\n9\n")):
        d = v2 / "kubepods" / "besteffort" / sub
        d.mkdir(parents=True)
        (d / "cgroup.procs").write_text(pids)
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    assert ev.pod_processes(pod, "kubepods", fs=str(v2)) == 3
    assert ev.pod_processes({"metadata": {"uid": "gone"}, "spec": {}}, "kubepods", fs=str(fake)) == 0


def test_ephemeral_storage_limits_in_the_kubelets_order_and_words() -> None:
    from kubeletpy.agent import eviction as ev

    Mi = 2**20

    def pod(volumes: list, *containers: tuple[str, str | None]) -> dict:
        return {"metadata": {"name": "p"}, "spec": {"volumes": volumes, "containers": [
            {"name": n, **({"resources": {"limits": {"ephemeral-storage": q}}} if q else {})} for n, q in containers]}}

    scratch = [{"name": "scratch", "emptyDir": {"sizeLimit": "5Mi"}}, {"name": "ram", "emptyDir": {"medium": "Memory"}}]
    p = pod(scratch, ("a", "4Mi"), ("b", "100Mi"))
    assert ev._has_storage_limits(p) and not ev._has_storage_limits(pod([], ("a", None)))
    assert ev.storage_limit_violation(p, {"scratch": 4 * Mi}, {"a": 3 * Mi, "b": 0}) is None
    assert ev.storage_limit_violation(p, {"scratch": 6 * Mi}, {"a": 0, "b": 0}) == \
        'Usage of EmptyDir volume "scratch" exceeds the limit "5Mi". '
    assert ev.storage_limit_violation(p, {"scratch": 0}, {"a": 5 * Mi, "b": 0}) == \
        'Container a exceeded its local ephemeral storage limit "4Mi". '
    # the pod total counts disk-backed emptyDirs (not memory ones) and is checked before containers
    assert ev.storage_limit_violation(p, {"scratch": 4 * Mi, "ram": 500 * Mi}, {"a": 50 * Mi, "b": 51 * Mi}) == \
        "Pod ephemeral local storage usage exceeds the total limit of containers 104Mi. "
    single = pod([], ("c", "4M"))
    assert ev.storage_limit_violation(single, {}, {"c": 5 * 10**6}) == \
        "Pod ephemeral local storage usage exceeds the total limit of containers 4M. "
    assert ev.storage_limit_violation(pod([], ("c", None)), {}, {"c": 10**9}) is None
    # sizeLimit 0 is no limit (the kubelet enforces only positive ones)
    zero = pod([{"name": "z", "emptyDir": {"sizeLimit": "0"}}], ("c", None))
    assert not ev._has_storage_limits(zero) and ev.storage_limit_violation(zero, {"z": Mi}, {"c": 0}) is None
