"""The agent end to end: real control plane, real CRI runtime daemon, real agent, real kubectl.

One cluster for the module (unique ports, socket, CNI bridge/subnet, cgroup root); the
examples/ manifests are applied as they are shipped, with only spec.nodeName added (no
scheduler runs here). Teardown proves the host is clean.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from .harness import BUSYBOX, ROOT, Cluster, wait_for

pytestmark = pytest.mark.slow


def example(filename: str, node: str, **overrides: Any) -> dict[str, Any]:
    pod = yaml.safe_load((ROOT / "examples" / filename).read_text())
    pod["spec"]["nodeName"] = node
    pod["metadata"].update(overrides)
    return pod


def simple_pod(name: str, node: str, command: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": BUSYBOX, "imagePullPolicy": "Never", "command": ["sh", "-c", command]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [container], **spec}}


def agent_get(c: Cluster, path: str) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import urllib.request

    req = urllib.request.Request(f"https://127.0.0.1:{c.agent_port}{path}",
                                 headers={"Authorization": f"Bearer {c.admin_token()}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def agent_exec(c: Cluster, pod: str, container: str, command: list[str]) -> tuple[int, bytes]:
    from cri.streaming import client as sc

    async def run() -> tuple[int, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        q = urllib.parse.urlencode([("command", x) for x in command] + [("stdout", "true"), ("stderr", "true")])
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {c.admin_token()}"},
                                         connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            r = await sc.exec_websocket(s, f"https://127.0.0.1:{c.agent_port}/exec/default/{pod}/{container}?{q}")
            return r.exit_code, r.stdout + r.stderr

    return asyncio.run(asyncio.wait_for(run(), 30))


def events(c: Cluster, pod: str) -> list[str]:
    r = c.kubectl("get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json")
    return [e["reason"] for e in json.loads(r.stdout)["items"]]


def cstatus(p: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return (p.get("status") or {}).get("containerStatuses", [{}])[i]


def http_get(ip: str, port: int, path: str = "/") -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=3) as r:
        return r.read().decode()


# ------------------------------------------------------------------ node

def test_node_registered_with_measured_status(cluster: Cluster) -> None:
    n = cluster.get("node", cluster.node, "")
    assert n is not None
    st = n["status"]
    for k in ("cpu", "memory", "pods", "ephemeral-storage"):
        assert k in st["capacity"] and k in st["allocatable"]
    assert st["capacity"]["pods"] == "110"
    info = st["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("kubeletpy://")
    assert info["kubeletVersion"].startswith("v1.") and info["operatingSystem"] == "linux"
    assert info["kernelVersion"] and info["osImage"] and info["architecture"]
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Ready": "True", "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False"}
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == cluster.agent_port
    assert any(BUSYBOX in i["names"] for i in st["images"])
    assert {"type": "InternalIP", "address": "127.0.0.1"} in st["addresses"]
    lease = cluster.get("lease", cluster.node, "kube-node-lease")
    assert lease is not None and lease["spec"]["holderIdentity"] == cluster.node
    # the join token was exchanged for a node credential, used from then on
    cred = yaml.safe_load((cluster.base / "agent" / "kubeconfig").read_text())
    assert cred["users"][0]["name"] == f"system:node:{cluster.node}"
    # the runtime got the pod CIDR and wrote the CNI config for it
    conf = json.loads(next((cluster.base / "cni" / "net.d").glob("*.conflist")).read_text())
    assert cluster.subnet in json.dumps(conf)


def test_agent_serves_a_certificate_issued_by_the_cluster(cluster: Cluster) -> None:
    """The agent asked for its serving certificate with a CSR, the control plane approved it and
    signed it with the agents' serving CA, and :10250 now passes verification against that CA
    for the node's address -- so the API server's hop to it (logs, exec) is verified too. API
    clients trust only the cluster CA, so that certificate could not pose as the API server."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_ca = ssl.create_default_context(cadata=base64.b64decode(
        cfg["clusters"][0]["cluster"]["certificate-authority-data"]).decode())
    strict = ssl.create_default_context(cafile=str(cluster.base / "cp" / "pki" / "kubelet-serving-ca.crt"))

    def verified() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", cluster.agent_port), timeout=2) as raw, \
                    strict.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                cert = tls.getpeercert()
        except ssl.SSLCertVerificationError:
            return False
        return dict(x[0] for x in cert["subject"])["commonName"] == f"system:node:{cluster.node}"

    wait_for(verified, 30, "the agent serving a cluster-signed certificate")
    with pytest.raises(ssl.SSLCertVerificationError), socket.create_connection(
            ("127.0.0.1", cluster.agent_port), timeout=2) as raw:
        cluster_ca.wrap_socket(raw, server_hostname="127.0.0.1")
    csrs = cluster.kubectl("get", "csr", "-o", "json").stdout
    mine = [c for c in json.loads(csrs)["items"] if c["spec"]["username"] == f"system:node:{cluster.node}"]
    assert mine and mine[-1]["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
    assert [c["type"] for c in mine[-1]["status"]["conditions"]] == ["Approved"] and mine[-1]["status"]["certificate"]
    issued = cluster.base / "agent" / "pki" / "kubelet-server-current.pem"
    assert oct(issued.stat().st_mode & 0o777) == "0o600"
    assert "Approved,Issued" in cluster.kubectl("get", "csr", mine[-1]["metadata"]["name"]).stdout


# ------------------------------------------------------------------ examples

def test_web_pod_serves_and_readiness_drives_ready(cluster: Cluster) -> None:
    cluster.apply(example("web.yaml", cluster.node))
    p = cluster.wait_pod("web", Cluster.ready, 40, "web Ready")
    st = p["status"]
    assert st["phase"] == "Running" and st["qosClass"] == "BestEffort" and st["hostIP"] == "127.0.0.1"
    ip = st["podIP"]
    assert ip.startswith(cluster.subnet.rsplit(".", 1)[0] + ".") and st["podIPs"] == [{"ip": ip}]
    assert st["startTime"]
    cs = cstatus(p)
    assert cs["containerID"].startswith("kubeletpy://") and cs["imageID"] and cs["ready"] and cs["started"]
    assert "running" in cs["state"] and cs["restartCount"] == 0
    assert http_get(ip, 8080) == "hello from web\n"
    assert {"Pulled", "Created", "Started"} <= set(events(cluster, "web"))
    # readiness follows the probe: break the page -> NotReady, restore -> Ready; no restart
    assert agent_exec(cluster, "web", "httpd", ["mv", "/www/index.html", "/www/x"])[0] == 0
    cluster.wait_pod("web", lambda p: not Cluster.ready(p), 20, "web NotReady")
    assert agent_exec(cluster, "web", "httpd", ["mv", "/www/x", "/www/index.html"])[0] == 0
    p = cluster.wait_pod("web", Cluster.ready, 20, "web Ready again")
    assert cstatus(p)["restartCount"] == 0
    code, out = agent_exec(cluster, "web", "httpd", ["sh", "-c", "echo $POD_NAME; exit 3"])
    assert (code, out) == (3, b"web\n")


def test_scheduled_pod_runs(cluster: Cluster) -> None:
    """No nodeName: the control plane's scheduler binds it to our (only) node."""
    pod = example("web.yaml", cluster.node, name="web-scheduled")
    del pod["spec"]["nodeName"]
    cluster.apply(pod)
    p = cluster.wait_pod("web-scheduled", Cluster.ready, 60, "scheduled web Ready")
    assert p["spec"]["nodeName"] == cluster.node
    assert http_get(p["status"]["podIP"], 8080) == "hello from web-scheduled\n"
    cluster.kubectl("delete", "pod", "web-scheduled", "--grace-period=1", "--wait=false")


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_exec_attach_portforward_through_the_agent(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPDY exec with stdin, SPDY attach, SPDY and websocket port-forward: the agent splices
    each upgraded connection to the runtime's streaming URL."""
    from cri.streaming import client as sc

    token = cluster.admin_token()
    real_open = asyncio.open_connection

    async def open_with_auth(*a: Any, **kw: Any) -> Any:
        # cri.streaming's SPDY client sends no Authorization header: add it to the request head
        r, w = await real_open(*a, **kw)
        real_write, first = w.write, [True]

        def write(data: bytes) -> None:
            if first[0]:
                first[0] = False
                data = data.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {token}\r\n\r\n".encode(), 1)
            real_write(data)

        w.write = write  # type: ignore[method-assign]
        return r, w

    monkeypatch.setattr(sc.asyncio, "open_connection", open_with_auth)
    cluster.apply(simple_pod("echo", cluster.node, 'while read l; do echo "echo: $l"; done; echo bye',
                             restartPolicy="Never", container={"stdin": True, "stdinOnce": True}))
    cluster.wait_pod("echo", Cluster.ready, 40, "echo Ready")
    base = f"https://127.0.0.1:{cluster.agent_port}"

    async def run() -> None:
        q = urllib.parse.urlencode([("command", "sh"), ("command", "-c"), ("command", "read x; echo got $x; exit 4"),
                                    ("stdin", "true"), ("stdout", "true"), ("stderr", "true")])
        r = await sc.exec_spdy(f"{base}/exec/default/web/httpd?{q}", stdin=b"abc\n", ssl=_insecure())
        assert (r.stdout, r.exit_code) == (b"got abc\n", 4)
        r = await sc.exec_spdy(f"{base}/attach/default/echo/c?stdin=true&stdout=true&stderr=true",
                               stdin=b"hi\nthere\n", ssl=_insecure())
        assert r.stdout == b"echo: hi\necho: there\nbye\n"
        pf = await sc.PortForwardClient.connect(f"{base}/portForward/default/web", ssl=_insecure())
        try:
            data, _ = await pf.open(8080)
            await data.write(b"GET / HTTP/1.0\r\n\r\n")
            assert (await data.read_all()).endswith(b"hello from web\n")
        finally:
            await pf.close()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                         connector=aiohttp.TCPConnector(ssl=_insecure())) as s, \
                s.ws_connect(f"{base}/portForward/default/web?ports=8080", protocols=["v4.channel.k8s.io"]) as ws:
            got = b""
            first = await ws.receive()  # the data channel's port prefix: the stream is set up
            assert first.type == aiohttp.WSMsgType.BINARY and first.data[0] == 0
            got += first.data[1:]
            await ws.send_bytes(b"\x00GET / HTTP/1.0\r\n\r\n")
            async for m in ws:
                if m.type == aiohttp.WSMsgType.BINARY and m.data[0] == 0:
                    got += m.data[1:]
                    if got.endswith(b"hello from web\n"):
                        break
            assert got[2:].startswith(b"HTTP/1.") and got.endswith(b"hello from web\n")  # 2-byte port prefix

    asyncio.run(asyncio.wait_for(run(), 60))
    cluster.wait_pod("echo", lambda p: p["status"].get("phase") == "Succeeded", 20, "echo Succeeded after attach")


def test_two_containers_share_an_emptydir_and_logs(cluster: Cluster) -> None:
    cluster.apply(example("shared-emptydir.yaml", cluster.node))
    cluster.wait_pod("shared", lambda p: Cluster.ready(p), 40, "shared Ready")
    code, body = wait_for(lambda: (r := agent_get(cluster, "/containerLogs/default/shared/reader?tailLines=2"))
                          and "line 3" in r[1] and r, 20, "reader logs")
    lines = body.splitlines()
    assert code == 200 and len(lines) == 2 and all(ln.startswith("line ") for ln in lines)
    code, body = agent_get(cluster, "/containerLogs/default/shared/reader?timestamps=true&tailLines=1")
    assert code == 200 and body.split(" ", 1)[0].endswith("Z") and "line" in body
    assert agent_get(cluster, "/containerLogs/default/shared/nope")[0] == 400
    assert agent_get(cluster, "/containerLogs/default/nosuchpod/reader")[0] == 404


def test_agent_server_requires_admin_credentials(cluster: Cluster) -> None:
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    node_token = yaml.safe_load((cluster.base / "agent" / "kubeconfig").read_text())["users"][0]["user"]["token"]
    for headers, want in (({}, 401), ({"Authorization": "Bearer wrong"}, 403),
                          ({"Authorization": f"Bearer {node_token}"}, 403)):
        req = urllib.request.Request(f"https://127.0.0.1:{cluster.agent_port}/pods", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, context=ctx, timeout=5)
        assert e.value.code == want
    code, body = agent_get(cluster, "/pods")
    assert code == 200 and json.loads(body)["kind"] == "PodList"


def test_crashloop_backs_off(cluster: Cluster) -> None:
    # the harness runs the agent with --backoff 2,8,600: delays 0, 2, 4, 8, 8 ...
    cluster.apply(example("crashloop.yaml", cluster.node))
    p = cluster.wait_pod("crashloop", lambda p: cstatus(p).get("restartCount", 0) >= 3, 60, "3 restarts")
    seen_backoff = wait_for(lambda: (q := cluster.pod("crashloop")) and
                            (w := cstatus(q)["state"].get("waiting")) and w["reason"] == "CrashLoopBackOff" and
                            (q, w), 30, "CrashLoopBackOff")
    q, w = seen_backoff
    assert "back-off" in w["message"] and "restarting failed container=crash" in w["message"]
    last = cstatus(q)["lastState"]["terminated"]
    assert last["exitCode"] == 1 and last["reason"] == "Error"
    assert q["status"]["phase"] == "Running"
    assert "BackOff" in events(cluster, "crashloop")
    # restarts slow down: the gap before restart n+1 is at least the doubled delay
    t0, n0 = time.monotonic(), cstatus(p)["restartCount"]
    cluster.wait_pod("crashloop", lambda p: cstatus(p)["restartCount"] >= n0 + 2, 40, "two more restarts")
    assert time.monotonic() - t0 >= 8  # two waits of >= 4 s each (capped at 8)
    code, body = agent_get(cluster, "/containerLogs/default/crashloop/crash?previous=true")
    assert code == 200 and "starting" in body and "failing" in body
    # dead containers are collected (harness: --gc-period 5): the current one + 1 previous stay
    wait_for(lambda: len(runtime_containers(cluster, "crashloop")) <= 2, 20, "container GC")
    cluster.kubectl("delete", "pod", "crashloop", "--grace-period=1", "--wait=false")


def runtime_containers(cluster: Cluster, pod: str) -> list[Any]:
    from kubeletpy.agent import labels as L
    from kubeletpy.agent.cri import CRIClient

    async def run() -> list[Any]:
        c = CRIClient(f"unix://{cluster.sock}")
        try:
            return await c.list_containers({L.POD_NAME: pod})
        finally:
            await c.close()

    return asyncio.run(run())


def test_limits_pod_gets_guaranteed_cgroup(cluster: Cluster) -> None:
    cluster.apply(example("limits.yaml", cluster.node))
    p = cluster.wait_pod("limits", Cluster.ready, 40, "limits Ready")
    assert p["status"]["qosClass"] == "Guaranteed"
    uid = p["metadata"]["uid"]
    pod_cg = Path(f"/sys/fs/cgroup/memory/{cluster.cgroup_root}/kubepods/pod{uid}")
    if not pod_cg.exists():  # cgroup v2
        pod_cg = Path(f"/sys/fs/cgroup/{cluster.cgroup_root}/kubepods/pod{uid}")
        assert (pod_cg / "memory.max").read_text().strip() == str(64 << 20)
        assert (pod_cg / "cpu.max").read_text().split()[0] == "25000"
        return
    assert int((pod_cg / "memory.limit_in_bytes").read_text()) == 64 << 20
    cpu_cg = Path(f"/sys/fs/cgroup/cpu,cpuacct/{cluster.cgroup_root}/kubepods/pod{uid}")
    if not cpu_cg.exists():
        cpu_cg = Path(f"/sys/fs/cgroup/cpu/{cluster.cgroup_root}/kubepods/pod{uid}")
    assert int((cpu_cg / "cpu.cfs_quota_us").read_text()) == 25000
    assert int((cpu_cg / "cpu.shares").read_text()) == 256
    # and each container cgroup under the pod has the container's own limit
    ctr_limits = [int((d / "memory.limit_in_bytes").read_text()) for d in pod_cg.iterdir() if d.is_dir()]
    assert 64 << 20 in ctr_limits


def test_memory_hog_is_reported_oomkilled(cluster: Cluster) -> None:
    """A container over its memory limit is killed by the kernel and the pod says OOMKilled."""
    cluster.apply(simple_pod("oom", cluster.node, "dd if=/dev/zero of=/dev/null bs=96M count=1",
                             restartPolicy="Never", terminationGracePeriodSeconds=1,
                             container={"resources": {"limits": {"memory": "32Mi", "cpu": "200m"}}}))
    p = cluster.wait_pod("oom", lambda p: (p.get("status") or {}).get("phase") == "Failed", 60, "oom Failed")
    term = cstatus(p)["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137, term


# ------------------------------------------------------------------ lifecycle

def test_liveness_failure_restarts_the_container(cluster: Cluster) -> None:
    cluster.apply(simple_pod("liveness", cluster.node, "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600",
                             container={"livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]},
                                                          "periodSeconds": 1, "failureThreshold": 2}},
                             terminationGracePeriodSeconds=1))
    p = cluster.wait_pod("liveness", lambda p: cstatus(p).get("restartCount", 0) >= 1, 40, "liveness restart")
    reasons = events(cluster, "liveness")
    assert "Unhealthy" in reasons and "Killing" in reasons
    assert "terminated" in cstatus(p)["lastState"]


def test_init_containers_env_and_volumes(cluster: Cluster) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                   "data": {"greeting": "hello", "file.txt": "from-configmap"}})
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
                   "stringData": {"password": "hunter2"}})
    script = ("cat /work/init.txt; echo GREETING=$GREETING; echo PASS=$PASS; echo NODE=$NODE; "
              "cat /cfg/file.txt; echo; cat /sec/password; echo; cat /info/labels; echo; "
              "cat /mem/probe 2>/dev/null || echo tmpfs-empty; df /mem | tail -1 | awk '{print $1}'")
    pod = simple_pod("initenv", cluster.node, script, restartPolicy="Never", container={
        "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "cfg", "mountPath": "/cfg"},
                         {"name": "sec", "mountPath": "/sec"}, {"name": "info", "mountPath": "/info"},
                         {"name": "mem", "mountPath": "/mem"}]})
    pod["metadata"]["labels"] = {"app": "initenv"}
    pod["spec"]["initContainers"] = [
        {"name": "first", "image": BUSYBOX, "imagePullPolicy": "Never",
         "command": ["sh", "-c", "echo init-1 > /work/init.txt"], "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
        {"name": "second", "image": BUSYBOX, "imagePullPolicy": "Never",
         "command": ["sh", "-c", "echo init-2 >> /work/init.txt"],
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]
    pod["spec"]["volumes"] = [
        {"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "sec", "secret": {"secretName": "sec"}},
        {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]
    cluster.apply(pod)
    p = cluster.wait_pod("initenv", lambda p: p["status"].get("phase") == "Succeeded", 60, "initenv Succeeded")
    inits = p["status"]["initContainerStatuses"]
    assert [s["state"]["terminated"]["exitCode"] for s in inits] == [0, 0]
    assert cstatus(p)["state"]["terminated"]["reason"] == "Completed"
    code, out = agent_get(cluster, "/containerLogs/default/initenv/c")
    assert code == 200
    assert out.splitlines() == ["init-1", "init-2", "GREETING=hello", "PASS=hunter2", f"NODE={cluster.node}",
                                "from-configmap", "hunter2", 'app="initenv"', "tmpfs-empty", "tmpfs"]


def test_security_context_and_log_follow(cluster: Cluster) -> None:
    cluster.apply(simple_pod("secctx", cluster.node,
                             "id -u; id -g; touch /x 2>/dev/null && echo rw || echo ro; "
                             "for i in 1 2 3; do echo tick $i; sleep 1; done",
                             restartPolicy="Never",
                             securityContext={"runAsUser": 1234, "runAsGroup": 2345},
                             container={"securityContext": {"readOnlyRootFilesystem": True,
                                                            "allowPrivilegeEscalation": False,
                                                            "capabilities": {"drop": ["ALL"]}}}))
    cluster.wait_pod("secctx", lambda p: "running" in cstatus(p).get("state", {}) or
                     "terminated" in cstatus(p).get("state", {}), 40, "secctx started")
    t0 = time.monotonic()
    code, body = agent_get(cluster, "/containerLogs/default/secctx/c?follow=true")
    # follow streams until the container exits
    assert code == 200 and body.splitlines() == ["1234", "2345", "ro", "tick 1", "tick 2", "tick 3"]
    assert time.monotonic() - t0 < 10
    p = cluster.wait_pod("secctx", lambda p: p["status"].get("phase") == "Succeeded", 20, "secctx Succeeded")
    assert cstatus(p)["state"]["terminated"]["exitCode"] == 0


def test_graceful_deletion_runs_prestop_then_sigterm(cluster: Cluster) -> None:
    hostdir = cluster.base / "hostpath-grace"
    pod = simple_pod("grace", cluster.node,
                     "trap 'echo term >> /h/log; exit 0' TERM; echo started >> /h/log; "
                     "while true; do sleep 0.2; done",
                     terminationGracePeriodSeconds=20,
                     container={"lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /h/log"]}}},
                                "volumeMounts": [{"name": "h", "mountPath": "/h"}]},
                     volumes=[{"name": "h", "hostPath": {"path": str(hostdir), "type": "DirectoryOrCreate"}}])
    cluster.apply(pod)
    cluster.wait_pod("grace", Cluster.ready, 40, "grace Ready")
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", "grace", "--wait=true", timeout=60)
    took = time.monotonic() - t0
    assert took < 15, f"a pod that exits on SIGTERM took {took:.1f}s to delete"
    assert (hostdir / "log").read_text().split() == ["started", "prestop", "term"]
    # a process that ignores SIGTERM is killed when the grace period ends
    cluster.apply(simple_pod("stubborn", cluster.node, "trap '' TERM; while true; do sleep 0.2; done",
                             terminationGracePeriodSeconds=3))
    cluster.wait_pod("stubborn", Cluster.ready, 40, "stubborn Ready")
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", "stubborn", "--wait=true", timeout=60)
    took = time.monotonic() - t0
    assert 2.5 <= took < 12, f"grace 3s deletion took {took:.1f}s"
    assert "Killing" in events(cluster, "stubborn")


def test_admission_rejects_what_does_not_fit(cluster: Cluster) -> None:
    big = simple_pod("toobig", cluster.node, "sleep 1", container={"resources": {"requests": {"cpu": "1000"}}})
    cluster.apply(big)
    p = cluster.wait_pod("toobig", lambda p: p["status"].get("phase") == "Failed", 20, "toobig Failed")
    assert p["status"]["reason"] == "OutOfcpu"
    mem = simple_pod("toomuchmem", cluster.node, "sleep 1", container={"resources": {"requests": {"memory": "100Ti"}}})
    cluster.apply(mem)
    assert cluster.wait_pod("toomuchmem", lambda p: p["status"].get("phase") == "Failed", 20)["status"]["reason"] \
        == "OutOfmemory"
    port = {"ports": [{"containerPort": 80, "hostPort": 39123}]}
    cluster.apply(simple_pod("hp1", cluster.node, "sleep 3600", container=port, terminationGracePeriodSeconds=1))
    cluster.wait_pod("hp1", Cluster.ready, 40, "hp1 Ready")
    cluster.apply(simple_pod("hp2", cluster.node, "sleep 3600", container=port))
    assert cluster.wait_pod("hp2", lambda p: p["status"].get("phase") == "Failed", 20)["status"]["reason"] \
        == "NodePorts"
    cluster.kubectl("delete", "pod", "toobig", "toomuchmem", "hp1", "hp2", "--wait=true", timeout=60)


def test_active_deadline(cluster: Cluster) -> None:
    cluster.apply(simple_pod("deadline", cluster.node, "sleep 3600", activeDeadlineSeconds=3,
                             terminationGracePeriodSeconds=1))
    p = cluster.wait_pod("deadline", lambda p: p["status"].get("phase") == "Failed", 30, "deadline Failed")
    assert p["status"]["reason"] == "DeadlineExceeded"
    cluster.kubectl("delete", "pod", "deadline", "--wait=true", timeout=60)


# ------------------------------------------------------------------ restart safety, static pods

def test_kill_9_agent_pods_survive_and_status_reconverges(cluster: Cluster) -> None:
    before = {n: cluster.pod(n) for n in ("web", "shared", "limits")}
    ip = before["web"]["status"]["podIP"]
    cluster.kill("agent")  # SIGKILL
    # the pods do not notice: same containers, still serving
    time.sleep(1)
    assert http_get(ip, 8080) == "hello from web\n"
    # something happens while the agent is down: a pod is deleted
    cluster.kubectl("delete", "pod", "shared", "--wait=false")
    cluster.restart_agent()  # with its own node identity again
    wait_for(lambda: cluster.get("pod", "shared") is None, 60, "shared deleted by the new agent", interval=0.3)
    time.sleep(4)  # a few resyncs of the new agent
    for name in ("web", "limits"):
        after = cluster.pod(name)
        assert after["status"]["containerStatuses"] == before[name]["status"]["containerStatuses"], name
        assert after["status"]["phase"] == "Running" and Cluster.ready(after)
    assert http_get(ip, 8080) == "hello from web\n"


def test_static_pod_runs_and_is_mirrored(cluster: Cluster) -> None:
    """The agent runs as system:node:<name>: NodeRestriction lets it create its own mirror pods."""
    manifest = cluster.manifests / "static-web.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "static-web"},
                                        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                                            "name": "c", "image": BUSYBOX, "imagePullPolicy": "Never",
                                            "command": ["sleep", "3600"]}]}}))
    name = f"static-web-{cluster.node}"
    p = cluster.wait_pod(name, Cluster.ready, 40, "mirror pod Ready")
    assert "kubernetes.io/config.mirror" in p["metadata"]["annotations"]
    cid = cstatus(p)["containerID"]
    # deleting the mirror pod does not stop the static pod: it is mirrored again
    cluster.kubectl("delete", "pod", name, "--wait=true", timeout=60)
    p = cluster.wait_pod(name, lambda p: Cluster.ready(p), 30, "mirror pod recreated")
    assert cstatus(p)["containerID"] == cid
    manifest.unlink()
    wait_for(lambda: cluster.get("pod", name) is None, 30, "mirror pod removed", interval=0.3)
    wait_for(lambda: name not in agent_get(cluster, "/pods")[1], 20, "static pod stopped")


def test_watch_resumes_after_api_server_restart(cluster: Cluster) -> None:
    import signal

    cluster.kill("control-plane", signal.SIGKILL)
    cluster.start_controlplane()
    cluster.apply(simple_pod("after-restart", cluster.node, "sleep 3600", terminationGracePeriodSeconds=1))
    p = cluster.wait_pod("after-restart", Cluster.ready, 40, "pod created after the API restart Ready")
    assert p["status"]["podIP"]
    wait_for(cluster.node_ready, 30, "node Ready after the API restart")


def test_startup_probe_gates_readiness_and_spec_change_restarts(cluster: Cluster) -> None:
    cluster.apply(simple_pod("startup", cluster.node, "sleep 3; touch /tmp/started; exec sleep 3600",
                             terminationGracePeriodSeconds=1,
                             container={"startupProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]},
                                                         "periodSeconds": 1, "failureThreshold": 30}}))
    p = cluster.wait_pod("startup", lambda p: "running" in cstatus(p).get("state", {}), 40, "startup running")
    assert cstatus(p)["started"] is False and not cstatus(p)["ready"]
    p = cluster.wait_pod("startup", Cluster.ready, 30, "startup Ready once the startup probe passed")
    assert cstatus(p)["started"] is True and cstatus(p)["restartCount"] == 0
    # `kubectl set image` changes the container's spec hash: the agent restarts it
    cluster.kubectl("set", "image", "pod/startup", "c=kubeletpy.local/busybox")
    p = cluster.wait_pod("startup", lambda p: cstatus(p).get("restartCount") == 1 and Cluster.ready(p), 40,
                         "restart after the image change")
    assert cstatus(p)["image"] == "kubeletpy.local/busybox"
    assert "Killing" in events(cluster, "startup")
    cluster.kubectl("delete", "pod", "startup", "--wait=false")


KUBECTLS = [k for k in ("/usr/lib/google-cloud-sdk/bin/kubectl.1.27", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33")
            if Path(k).exists()] or ["/usr/bin/kubectl"]


@pytest.mark.parametrize("kubectl", KUBECTLS, ids=lambda k: Path(k).name)
def test_real_kubectl_logs_exec_portforward_via_the_api_server(cluster: Cluster, kubectl: str) -> None:
    """kubectl -> API server proxy (control plane) -> agent :10250 -> runtime streaming server."""
    import signal
    import subprocess

    cluster.wait_pod("web", Cluster.ready, 40, "web Ready")

    def k(*args: str, input: str | None = None) -> str:
        r = subprocess.run([kubectl, "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True, text=True,
                           input=input, timeout=30)
        assert r.returncode == 0, f"{kubectl} {args}: {r.stderr}"
        return r.stdout

    assert k("exec", "-i", "web", "--", "sh", "-c", "read x; echo got $x", input="abc\n") == "got abc\n"
    assert k("exec", "web", "-c", "httpd", "--", "cat", "/www/index.html") == "hello from web\n"
    assert "response:200" in k("logs", "web", "--tail=5")  # httpd -v logs the readiness probe's requests
    assert k("logs", "web", "--tail=1", "--timestamps").split(" ", 1)[0].endswith("Z")
    port = str(free_port_local())
    pf = subprocess.Popen([kubectl, "--kubeconfig", str(cluster.kubeconfig), "port-forward", "pod/web",
                           f"{port}:8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: http_get("127.0.0.1", int(port)), 20, "port-forward") == "hello from web\n"
    finally:
        pf.send_signal(signal.SIGTERM)
        pf.wait(timeout=10)


def free_port_local() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_runtime_restart_does_not_disturb_pods(cluster: Cluster) -> None:
    import signal

    before = cluster.wait_pod("web", Cluster.ready, 40, "web Ready")
    cluster.kill("runtime", signal.SIGKILL)
    time.sleep(1.5)
    assert http_get(before["status"]["podIP"], 8080) == "hello from web\n"  # shims keep the pods alive
    cluster.start_runtime()
    wait_for(cluster.node_ready, 40, "node Ready with the new runtime")
    time.sleep(3)
    after = cluster.pod("web")
    assert cstatus(after)["containerID"] == cstatus(before)["containerID"]
    assert cstatus(after)["restartCount"] == cstatus(before)["restartCount"] and Cluster.ready(after)
    # and the agent drives the new runtime: a new pod starts
    cluster.apply(simple_pod("after-runtime", cluster.node, "sleep 3600", terminationGracePeriodSeconds=1))
    cluster.wait_pod("after-runtime", Cluster.ready, 40, "pod started after the runtime restart")


def test_host_network_and_dns_config(cluster: Cluster) -> None:
    cluster.apply(simple_pod("hostnet", cluster.node, "sleep 3600", hostNetwork=True,
                             terminationGracePeriodSeconds=1))
    cluster.apply(simple_pod("dnsnone", cluster.node, "sleep 3600", dnsPolicy="None", terminationGracePeriodSeconds=1,
                             dnsConfig={"nameservers": ["192.0.2.53"], "searches": ["example.test"],
                                        "options": [{"name": "ndots", "value": "2"}]}))
    p = cluster.wait_pod("hostnet", Cluster.ready, 40, "hostnet Ready")
    assert p["status"]["podIP"] == p["status"]["hostIP"] == "127.0.0.1"
    code, out = agent_exec(cluster, "hostnet", "c", ["cat", "/proc/net/dev"])
    assert code == 0 and f"{cluster.bridge}:" in out.decode()  # the host's interfaces, not a pod netns
    code, out = agent_exec(cluster, "web", "httpd", ["cat", "/proc/net/dev"])
    assert code == 0 and f"{cluster.bridge}:" not in out.decode()
    cluster.wait_pod("dnsnone", Cluster.ready, 40, "dnsnone Ready")
    code, out = agent_exec(cluster, "dnsnone", "c", ["cat", "/etc/resolv.conf"])
    assert code == 0 and out.decode().split("\n")[:3] == ["nameserver 192.0.2.53", "search example.test",
                                                          "options ndots:2"]
    cluster.kubectl("delete", "pod", "hostnet", "dnsnone", "--wait=false")
