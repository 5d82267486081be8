"""The agent's pod-lifecycle behaviours end to end, on real parts only.

Each behaviour here already has unit tests of its logic; these prove the whole path: a
real control plane, CRI runtime daemon and agent (see harness.py), real kubectl, and real
counterparts for what the agent talks to -- Debian's docker-registry behind htpasswd
basic auth for imagePullSecrets, a small tmpfs as the image filesystem for image GC, a
grpc.health.v1 server inside the pod's network namespace for gRPC probes, busybox httpd
CGI for an httpGet preStop hook. Every extra process, mount and directory is the test's
own and goes in a finally block; the cluster fixture proves the host is clean.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from images.helpers import OCI_MANIFEST, F, Layout

from cri.images import ImageStore
from kubeletpy.agent import labels as L
from kubeletpy.agent.cri import CRIClient, pb

from .harness import BUSYBOX, KUBECTL, ROOT, Cluster, free_port, wait_for
from .test_e2e import cstatus, events, runtime_containers, simple_pod

pytestmark = pytest.mark.slow
T = TypeVar("T")


# ------------------------------------------------------------------ helpers

def cri(c: Cluster, call: Callable[[CRIClient], Awaitable[T]]) -> T:
    """One CRI call against the cluster's runtime, as the agent makes it."""

    async def run() -> T:
        client = CRIClient(f"unix://{c.sock}")
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(run())


def pod_events(c: Cluster, pod: str) -> list[dict[str, Any]]:
    r = c.kubectl("get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json")
    return list(json.loads(r.stdout)["items"])


def waiting_reason(p: dict[str, Any], i: int = 0, key: str = "containerStatuses") -> str:
    statuses = (p.get("status") or {}).get(key) or [{}]
    return str(((statuses[i].get("state") or {}).get("waiting") or {}).get("reason", ""))


def condition(p: dict[str, Any], ctype: str) -> str:
    return next((c["status"] for c in (p.get("status") or {}).get("conditions") or [] if c["type"] == ctype), "")


def kinds_in_runtime(c: Cluster, pod: str) -> list[str]:
    """`init`/`regular` for every container instance the runtime holds for the pod."""
    return sorted(x.labels.get(L.CONTAINER_KIND, "") for x in runtime_containers(c, pod))


def busybox_layer(store_root: Path) -> tuple[bytes, dict[str, Any]]:
    """The uncompressed layer and the runtime config of the cluster's busybox image, to build
    test images that can run a shell."""
    store = ImageStore(root=store_root)
    img = store.get(BUSYBOX)
    (layer,) = img.layers
    return gzip.decompress(store.blobs.read(layer["digest"])), img.runtime_config


class PodWatch:
    """`kubectl get pods -w -o json` on one pod: every version the API server stored, so a
    status the agent reports only for a moment is seen too."""

    def __init__(self, c: Cluster, name: str) -> None:
        self.out = c.base / f"watch-{name}-{secrets.token_hex(3)}.json"
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(c.kubeconfig), "get", "pods",
                                          "--field-selector", f"metadata.name={name}", "-w", "-o", "json"],
                                         stdout=f, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def versions(self) -> list[dict[str, Any]]:
        text, out, dec, i = self.out.read_text(), [], json.JSONDecoder(), 0
        while True:
            while i < len(text) and text[i].isspace():
                i += 1
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                return out  # the end, or an object kubectl is still writing
            out.append(obj)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def err_then_backoff(versions: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """An ErrImagePull waiting state and an ImagePullBackOff one reported after it."""
    err = None
    for v in versions:
        cs = ((v.get("status") or {}).get("containerStatuses") or [{}])[0]
        w = (cs.get("state") or {}).get("waiting") or {}
        if w.get("reason") == "ErrImagePull":
            err = w
        elif w.get("reason") == "ImagePullBackOff" and err is not None:
            return err, w
    return None


class AuthRegistry:
    """Debian's docker-registry on a free loopback port, requiring htpasswd (bcrypt) basic
    auth for every request, pushes included."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.user, self.password = "puller", secrets.token_hex(8)
        d.mkdir(parents=True)
        ht = subprocess.run(["htpasswd", "-Bbn", self.user, self.password], check=True, capture_output=True,
                            text=True).stdout
        assert ht.startswith(f"{self.user}:$2"), ht  # bcrypt: the only scheme docker-registry accepts
        (d / "htpasswd").write_text(ht)
        self.host = f"127.0.0.1:{free_port()}"
        (d / "config.yml").write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {d / 'data'}}}}}\n"
            f"auth: {{htpasswd: {{realm: kubeletpy-test, path: {d / 'htpasswd'}}}}}\n"
            f"http: {{addr: '{self.host}'}}\n")
        log = open(d / "registry.log", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(d / "config.yml")], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_for(lambda: self.proc.poll() is None and self.status("/v2/") == 401, 15, "docker-registry up")
        except AssertionError:
            self.stop()
            raise

    def status(self, path: str, auth: tuple[str, str] | None = None) -> int:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"http://{self.host}{path}", headers={"Accept": OCI_MANIFEST})
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def push(self, layout: Path, tag: str, dest: str) -> None:
        subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "--dest-creds",
                        f"{self.user}:{self.password}", f"oci:{layout}:{tag}", f"docker://{self.host}/{dest}"],
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# ------------------------------------------------------------------ imagePullSecrets

def test_image_pull_secrets_against_an_authenticating_registry(cluster: Cluster) -> None:
    reg = AuthRegistry(cluster.base / "registry-auth")
    try:
        # an image only the registry has: busybox plus a layer with a token in it
        token = secrets.token_hex(8)
        layer, config = busybox_layer(cluster.base / "state")
        lay = Layout(cluster.base / "registry-auth" / "oci")
        lay.tag(lay.image([layer, [F("etc/pulled", token + "\n")]], config=config), "v1")
        reg.push(lay.path, "v1", "kpa/private:v1")
        image = f"{reg.host}/kpa/private:v1"
        assert reg.status("/v2/kpa/private/manifests/v1") == 401
        assert reg.status("/v2/kpa/private/manifests/v1", (reg.user, reg.password)) == 200
        assert cri(cluster, lambda c: c.image_status(image)) is None

        auth = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
        dockercfg = {"auths": {reg.host: {"username": reg.user, "password": reg.password, "auth": auth}}}
        cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"},
                       "type": "kubernetes.io/dockerconfigjson",
                       "data": {".dockerconfigjson": base64.b64encode(json.dumps(dockercfg).encode()).decode()}})
        cluster.apply(simple_pod("pull-secret", cluster.node, "cat /etc/pulled; exec sleep 3600",
                                 terminationGracePeriodSeconds=1, imagePullSecrets=[{"name": "regcred"}],
                                 container={"image": image, "imagePullPolicy": "Always"}))
        p = cluster.wait_pod("pull-secret", Cluster.ready, 60, "pull-secret Ready")
        assert cstatus(p)["imageID"] == cri(cluster, lambda c: c.image_status(image)).id
        msgs = [e["message"] for e in pod_events(cluster, "pull-secret") if e["reason"] == "Pulled"]
        assert any(m.startswith(f'Successfully pulled image "{image}"') for m in msgs), msgs
        wait_for(lambda: cluster.kubectl("logs", "pull-secret").stdout == token + "\n", 10,
                 "the token from the pulled layer in the log")

        # the same image, now on the node, without the secret: Always pulls, and the registry refuses
        watch = PodWatch(cluster, "pull-nosecret")
        try:
            cluster.apply(simple_pod("pull-nosecret", cluster.node, "exec sleep 3600",
                                     terminationGracePeriodSeconds=1,
                                     container={"image": image, "imagePullPolicy": "Always"}))
            # ErrImagePull is reported at each failed attempt and replaced by ImagePullBackOff
            # until the next one: the watch sees every version, however briefly it was current
            err, backoff = wait_for(lambda: err_then_backoff(watch.versions()), 30,
                                    "ErrImagePull, then ImagePullBackOff")
        finally:
            watch.stop()
        refusal = "requires a username and password"
        assert refusal in err["message"] and image in err["message"], err
        assert backoff["message"].startswith(f'Back-off pulling image "{image}": ErrImagePull: '), backoff
        assert refusal in backoff["message"], backoff
        p = cluster.pod("pull-nosecret")
        assert p["status"]["phase"] == "Pending" and not Cluster.ready(p)
        evs = pod_events(cluster, "pull-nosecret")
        failed = [e for e in evs if e["reason"] == "Failed"]
        assert failed and all(e["type"] == "Warning" and refusal in e["message"] for e in failed), failed
        assert any(e["reason"] == "BackOff" and e["type"] == "Normal" for e in evs), evs
        assert runtime_containers(cluster, "pull-nosecret") == []  # never created
    finally:
        cluster.kubectl("delete", "pod", "pull-secret", "pull-nosecret", "--ignore-not-found", "--wait=false")
        reg.stop()
    cluster.kubectl("delete", "secret", "regcred")


# ------------------------------------------------------------------ gRPC probes

GRPC_HEALTH_SERVER = r"""
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("0.0.0.0:" + sys.argv[1])
server.start()
print("listening", flush=True)
for line in sys.stdin:
    servicer.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(line.strip()))
    print(line.strip(), flush=True)
server.stop(0)
"""


def sandbox_netns(c: Cluster, uid: str) -> str:
    """The network namespace path of the pod's ready sandbox, from CRI PodSandboxStatus(verbose)."""

    async def call(client: CRIClient) -> str:
        ready = [s for s in await client.list_pod_sandboxes({L.POD_UID: uid}) if s.state == pb.SANDBOX_READY]
        assert len(ready) == 1, ready
        r = await client.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=ready[0].id, verbose=True))
        return str(json.loads(r.info["info"])["netNamespace"])

    return cri(c, call)


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output within {timeout}s")
    return proc.stdout.readline().strip()


def test_grpc_readiness_probe_follows_the_health_service(cluster: Cluster) -> None:
    """The agent's probe dials pod IP:port from the host, like the kubelet; the health server
    runs inside the pod's own network namespace (busybox cannot serve gRPC)."""
    port = 50051
    cluster.apply(simple_pod("grpc-probe", cluster.node, "exec sleep 3600", terminationGracePeriodSeconds=1,
                             container={"readinessProbe": {"grpc": {"port": port}, "periodSeconds": 1,
                                                           "failureThreshold": 1}}))
    p = cluster.wait_pod("grpc-probe", lambda p: "running" in cstatus(p).get("state", {}), 40, "grpc-probe running")
    # nothing listens yet: the probe fails, the pod stays NotReady
    wait_for(lambda: "Unhealthy" in events(cluster, "grpc-probe"), 20, "a failed gRPC probe")
    assert not Cluster.ready(cluster.pod("grpc-probe"))
    netns = sandbox_netns(cluster, p["metadata"]["uid"])
    server = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-c", GRPC_HEALTH_SERVER, str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert server.stdin is not None
    try:
        assert read_line(server, 20) == "listening"
        for status, ready in (("SERVING", True), ("NOT_SERVING", False), ("SERVING", True)):
            server.stdin.write(status + "\n")
            server.stdin.flush()
            assert read_line(server, 10) == status
            p = cluster.wait_pod("grpc-probe", lambda p, want=ready: Cluster.ready(p) == want, 20,
                                 f"Ready={ready} after {status}")
            assert condition(p, "ContainersReady") == ("True" if ready else "False")
            assert cstatus(p)["ready"] is ready and cstatus(p)["restartCount"] == 0
        msgs = [e["message"] for e in pod_events(cluster, "grpc-probe") if e["reason"] == "Unhealthy"]
        assert any("NOT_SERVING" in m for m in msgs), msgs
    finally:
        server.kill()
        server.communicate(timeout=10)  # reaps it and closes the pipes
        cluster.kubectl("delete", "pod", "grpc-probe", "--wait=false")


# ------------------------------------------------------------------ httpGet preStop

def test_graceful_deletion_runs_http_prestop_then_sigterm(cluster: Cluster) -> None:
    """preStop httpGet goes to busybox httpd in the pod; its CGI writes a marker into a hostPath
    the test reads, then the main process logs SIGTERM: the order proves hook-then-signal."""
    hostdir = cluster.base / "hostpath-httpstop"
    cgi = hostdir / "www" / "cgi-bin" / "stop"
    cgi.parent.mkdir(parents=True)
    (hostdir / "www" / "index.html").write_text("up\n")
    cgi.write_text("#!/bin/sh\necho prestop-$REQUEST_METHOD >> /h/log\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n")
    cgi.chmod(0o755)
    pod = simple_pod("httpstop", cluster.node,
                     "trap 'echo term >> /h/log; exit 0' TERM; httpd -p 8080 -h /h/www; echo started >> /h/log; "
                     "while true; do sleep 0.2; done",
                     terminationGracePeriodSeconds=20,
                     container={"ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"},
                                                   "periodSeconds": 1},
                                "lifecycle": {"preStop": {"httpGet": {"path": "/cgi-bin/stop", "port": "http"}}},
                                "volumeMounts": [{"name": "h", "mountPath": "/h"}]},
                     volumes=[{"name": "h", "hostPath": {"path": str(hostdir), "type": "Directory"}}])
    cluster.apply(pod)
    cluster.wait_pod("httpstop", Cluster.ready, 40, "httpstop Ready")
    assert (hostdir / "log").read_text().split() == ["started"]
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", "httpstop", "--wait=true", timeout=60)
    took = time.monotonic() - t0
    assert took < 15, f"a pod that exits on SIGTERM took {took:.1f}s to delete"
    assert (hostdir / "log").read_text().split() == ["started", "prestop-GET", "term"]
    assert "FailedPreStopHook" not in events(cluster, "httpstop")


# ------------------------------------------------------------------ init containers, restart policies

def test_failing_init_container_restarts_with_backoff_under_always(cluster: Cluster) -> None:
    pod = simple_pod("init-crash", cluster.node, "exec sleep 3600", terminationGracePeriodSeconds=1)
    pod["spec"]["initContainers"] = [{"name": "setup", "image": BUSYBOX, "imagePullPolicy": "Never",
                                      "command": ["sh", "-c", "echo setting up; exit 3"]}]
    cluster.apply(pod)
    # the harness runs the agent with --backoff 2,8,600: restarts after 0, 2, 4 s ...
    p = cluster.wait_pod("init-crash", lambda p: (p["status"].get("initContainerStatuses") or [{}])[0]
                         .get("restartCount", 0) >= 2, 40, "2 init restarts")
    p = cluster.wait_pod("init-crash", lambda p: waiting_reason(p, key="initContainerStatuses") == "CrashLoopBackOff",
                         30, "init container in CrashLoopBackOff")
    init = p["status"]["initContainerStatuses"][0]
    assert init["lastState"]["terminated"]["exitCode"] == 3 and init["lastState"]["terminated"]["reason"] == "Error"
    assert "back-off" in init["state"]["waiting"]["message"]
    app = cstatus(p)
    assert app["state"] == {"waiting": {"reason": "PodInitializing"}} and app["restartCount"] == 0
    assert p["status"]["phase"] == "Pending"
    assert condition(p, "Initialized") == "False" and condition(p, "Ready") == "False"
    assert "BackOff" in events(cluster, "init-crash")
    # the app container was never created, however often the init container ran
    kinds = kinds_in_runtime(cluster, "init-crash")
    assert kinds and set(kinds) == {"init"}, kinds
    cluster.kubectl("delete", "pod", "init-crash", "--wait=false")


def test_failing_init_container_fails_the_pod_under_never(cluster: Cluster) -> None:
    pod = simple_pod("init-never", cluster.node, "exec sleep 3600", restartPolicy="Never",
                     terminationGracePeriodSeconds=1)
    pod["spec"]["initContainers"] = [{"name": "setup", "image": BUSYBOX, "imagePullPolicy": "Never",
                                      "command": ["sh", "-c", "exit 3"]}]
    cluster.apply(pod)
    p = cluster.wait_pod("init-never", lambda p: p["status"].get("phase") == "Failed", 40, "init-never Failed")
    init = p["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 3 and init["restartCount"] == 0
    assert cstatus(p)["state"] == {"waiting": {"reason": "PodInitializing"}} and cstatus(p)["restartCount"] == 0
    assert condition(p, "Initialized") == "False" and condition(p, "Ready") == "False"
    assert kinds_in_runtime(cluster, "init-never") == ["init"]  # one attempt, no app container
    cluster.kubectl("delete", "pod", "init-never", "--wait=false")


def test_on_failure_restarts_failures_only(cluster: Cluster) -> None:
    """Runs 1 and 2 exit 1 (restarted), run 3 exits 0 (not restarted): the run counter lives in
    an emptyDir, which outlives container restarts."""
    script = "n=$(cat /s/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /s/n; echo run $n; [ $n -ge 3 ]"
    cluster.apply(simple_pod("onfailure", cluster.node, script, restartPolicy="OnFailure",
                             terminationGracePeriodSeconds=1, volumes=[{"name": "s", "emptyDir": {}}],
                             container={"volumeMounts": [{"name": "s", "mountPath": "/s"}]}))
    p = cluster.wait_pod("onfailure", lambda p: p["status"].get("phase") == "Succeeded", 60, "onfailure Succeeded")
    cs = cstatus(p)
    assert cs["restartCount"] == 2
    assert cs["state"]["terminated"]["exitCode"] == 0 and cs["state"]["terminated"]["reason"] == "Completed"
    assert cs["lastState"]["terminated"]["exitCode"] == 1 and cs["lastState"]["terminated"]["reason"] == "Error"
    assert cluster.kubectl("logs", "onfailure").stdout == "run 3\n"
    assert cluster.kubectl("logs", "onfailure", "--previous").stdout == "run 2\n"
    cluster.kubectl("delete", "pod", "onfailure", "--wait=false")


def test_post_start_hook_runs_before_the_container_counts_as_started(cluster: Cluster) -> None:
    """An exec postStart runs inside the container (it sees the container's filesystem); a failing
    one kills the container with a FailedPostStartHook event and the restart policy takes over."""
    cluster.apply(simple_pod("poststart", cluster.node, "while [ ! -f /s/hook ]; do sleep 0.1; done; "
                             "echo hook said $(cat /s/hook); sleep 3600", terminationGracePeriodSeconds=1,
                             volumes=[{"name": "s", "emptyDir": {}}],
                             container={"volumeMounts": [{"name": "s", "mountPath": "/s"}],
                                        "lifecycle": {"postStart": {"exec": {"command": [
                                            "sh", "-c", "echo $HOSTNAME > /s/hook"]}}}}))
    cluster.wait_pod("poststart", lambda p: cstatus(p).get("state", {}).get("running") is not None, 60,
                     "poststart running")
    wait_for(lambda: cluster.kubectl("logs", "poststart").stdout == "hook said poststart\n", 30, "the hook's mark")

    cluster.apply(simple_pod("poststart-fails", cluster.node, "sleep 3600", terminationGracePeriodSeconds=1,
                             container={"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 7"]}}}}))
    p = cluster.wait_pod("poststart-fails", lambda p: cstatus(p).get("restartCount", 0) >= 1, 60,
                         "the container killed by its failed hook and restarted")
    assert cstatus(p)["lastState"]["terminated"]["reason"] == "Error", cstatus(p)
    assert "FailedPostStartHook" in events(cluster, "poststart-fails")
    r = cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=poststart-fails,"
                        "reason=FailedPostStartHook", "-o", "jsonpath={.items[0].message}")
    assert "Exec lifecycle hook" in r.stdout and "poststart-fails" in r.stdout, r.stdout + r.stderr
    for name in ("poststart", "poststart-fails"):
        cluster.kubectl("delete", "pod", name, "--wait=false")


# ------------------------------------------------------------------ image GC

IMAGEFS_MIB = 64
MIB = 1 << 20
GC_SUMMARY = re.compile(r"image GC: (\S+) was ([\d.]+)% full .*: removed (\d+) images, now ([\d.]+)%")  # gc.py


def fs_usage(path: Path) -> float:
    st = os.statvfs(path)
    return 1 - st.f_bavail / st.f_blocks


def test_image_gc_frees_a_full_image_fs_largest_unused_first() -> None:
    """A cluster of its own whose runtime state root (image store included) is a 64 MiB tmpfs.

    Images: `inuse` (the largest, a running pod's), `a` > `b` > `c` (unused) and busybox. A
    filler file takes the fs to ~88 %; image GC (every second here) must remove `a` only: the
    largest unused image, which alone takes usage below 80 %, while the in-use one stays.
    Image sizes are compressed bytes and a layer sits on disk twice (blob + unpacked), so
    removing `a` frees twice its size -- a GC that stopped by sizes alone would also take `b`.
    """
    base = Path(tempfile.mkdtemp(prefix="kpg-", dir="/tmp"))
    c = Cluster(base, agent_args=["--gc-period", "1", "--image-minimum-gc-age", "0"])
    try:
        imagefs = c.tmpfs("state", IMAGEFS_MIB)
        c.start()
        fsinfo = cri(c, lambda x: x.image_fs_info())
        assert len(fsinfo) == 1 and os.stat(fsinfo[0].fs_id.mountpoint).st_dev == os.stat(imagefs).st_dev

        layer, config = busybox_layer(imagefs)
        lay = Layout(base / "oci")
        sizes = {"inuse": 8, "a": 4, "b": 2, "c": 1}
        for name, mib in sizes.items():
            layers: list[Any] = [[F(f"{name}.bin", os.urandom(mib * MIB))]]
            desc = lay.image([layer, *layers] if name == "inuse" else layers, config=config)
            lay.tag(desc, f"kubeletpy.local/gc/{name}:v1")
        ImageStore(root=imagefs).import_archive(lay.tarball(base / "gc-images.tar"))  # = `kubeletpy images import`
        refs = {n: f"kubeletpy.local/gc/{n}:v1" for n in sizes}
        listed = {t: i.size for i in cri(c, lambda x: x.list_images()) for t in i.repo_tags}
        assert set(refs.values()) | {BUSYBOX} <= set(listed)
        assert listed[refs["inuse"]] > listed[refs["a"]] > listed[refs["b"]] > listed[refs["c"]]
        assert listed[refs["a"]] > listed[BUSYBOX]

        c.apply(simple_pod("gc-inuse", c.node, "exec sleep 3600", terminationGracePeriodSeconds=1,
                           container={"image": refs["inuse"], "imagePullPolicy": "Never"}))
        p = c.wait_pod("gc-inuse", Cluster.ready, 40, "gc-inuse Ready")
        assert fs_usage(imagefs) < 0.80  # nothing to collect yet

        # fill up to ~88 % with something image GC cannot remove (other data on the image fs)
        mark = len(c.log("agent"))
        st = os.statvfs(imagefs)
        capacity = st.f_blocks * st.f_frsize
        want = int(0.88 * capacity) - (st.f_blocks - st.f_bavail) * st.f_frsize
        # a's on-disk share alone takes usage below 80 %; by its (compressed) size it would not
        assert 0.88 - listed[refs["a"]] / capacity > 0.80
        with open(imagefs / "filler", "wb") as f:
            f.write(b"\0" * want)
        summary = wait_for(lambda: GC_SUMMARY.search(c.log("agent")[mark:]), 30, "an image GC pass")
        assert Path(summary.group(1)) == Path(fsinfo[0].fs_id.mountpoint) and float(summary.group(2)) > 85
        assert summary.group(3) == "1" and float(summary.group(4)) < 80, summary.group(0)
        left = {t for i in cri(c, lambda x: x.list_images()) for t in i.repo_tags}
        assert refs["a"] not in left, summary.group(0)
        assert {refs["inuse"], refs["b"], refs["c"], BUSYBOX} <= left, (summary.group(0), left)
        assert fs_usage(imagefs) < 0.80
        assert "could not remove" not in c.log("agent")  # the in-use image was never even tried
        # the pod using the largest image kept running through it
        q = c.pod("gc-inuse")
        assert Cluster.ready(q) and cstatus(q)["containerID"] == cstatus(p)["containerID"]
        (imagefs / "filler").unlink()
    finally:
        leftovers = c.close()
        logs = {n: c.log(n)[-4000:] for n in ("agent", "runtime")}
        c.purge()
    assert not leftovers, f"host not clean after the GC cluster stopped: {leftovers}\n{logs}"
    assert not any(str(base) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())


# ------------------------------------------------------------------ node-pressure eviction

NODEFS_MIB = 64


def test_disk_pressure_evicts_the_noisy_neighbour() -> None:
    """A cluster of its own whose agent root (where emptyDir volumes live: the kubelet's nodefs)
    is a 64 MiB tmpfs, with a soft threshold `nodefs.available<50%` (grace 1 s, victims get at
    most 5 s) and a hard one at 25 %. A BestEffort pod fills its emptyDir with 40 MiB: past the
    soft threshold only, so it is evicted gracefully -- SIGTERM, its handler runs and exits 0.
    A second one writes 52 MiB: past the hard threshold, killed at once (137). Each time the
    node reports DiskPressure, that pod (and only it) becomes Failed/Evicted with a
    DisruptionTarget condition and loses its volume, the pressure goes, and the quiet
    Burstable pod beside them never noticed."""
    base = Path(tempfile.mkdtemp(prefix="kpe-", dir="/tmp"))
    c = Cluster(base, agent_args=["--eviction-hard", "nodefs.available<25%", "--eviction-soft", "nodefs.available<50%",
                                  "--eviction-soft-grace-period", "nodefs.available=1s",
                                  "--eviction-max-pod-grace-period", "5", "--eviction-pressure-transition-period", "1s",
                                  "--eviction-monitoring-interval", "1", "--node-status-check", "1"])
    try:
        nodefs = c.tmpfs("agent", NODEFS_MIB)
        c.start()
        vol = {"volumes": [{"name": "d", "emptyDir": {}}]}
        mount = {"volumeMounts": [{"name": "d", "mountPath": "/d"}]}
        c.apply(simple_pod("quiet", c.node, "exec sleep 3600", terminationGracePeriodSeconds=1, **vol,
                           container={**mount, "resources": {"requests": {"memory": "16Mi", "cpu": "10m"}}}))
        quiet = c.wait_pod("quiet", Cluster.ready, 40, "quiet Ready")
        assert fs_usage(nodefs) < 0.5

        def disk_pressure() -> str:
            conds = (c.get("node", c.node, "") or {}).get("status", {}).get("conditions", [])
            return next((x["status"] for x in conds if x["type"] == "DiskPressure"), "")

        # ephemeral storage limits are enforced without any node pressure, at once
        over_dir = {"volumes": [{"name": "d", "emptyDir": {"sizeLimit": "4Mi"}}]}
        c.apply(simple_pod("overdir", c.node, "dd if=/dev/zero of=/d/fill bs=1M count=6; exec sleep 3600",
                           **over_dir, container=mount))
        c.apply(simple_pod("overroot", c.node, "dd if=/dev/zero of=/tmp/fill bs=1M count=6; exec sleep 3600",
                           container={"resources": {"limits": {"ephemeral-storage": "4Mi"}}}))
        for name, why in (("overdir", 'Usage of EmptyDir volume "d" exceeds the limit "4Mi". '),
                          ("overroot", "Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ")):
            over = c.wait_pod(name, lambda p: p["status"].get("phase") == "Failed", 60, f"{name} evicted")
            assert (over["status"]["reason"], over["status"]["message"]) == ("Evicted", why), over["status"]
            assert cstatus(over)["state"]["terminated"]["exitCode"] == 137, cstatus(over)
        assert disk_pressure() == "False"

        for name, mib, threshold, exit_code in (("hog", 40, "50%", 0), ("hog2", 52, "25%", 137)):
            c.apply(simple_pod(name, c.node, "trap 'echo caught TERM; exit 0' TERM; "
                               f"dd if=/dev/zero of=/d/fill bs=1M count={mib}; while true; do sleep 0.2; done",
                               terminationGracePeriodSeconds=30, **vol, container=mount))
            hog = c.wait_pod(name, lambda p: p["status"].get("phase") == "Failed", 60, f"{name} evicted")
            st = hog["status"]
            assert st["reason"] == "Evicted", st
            assert st["message"].startswith("The node was low on resource: ephemeral-storage. Threshold quantity: "
                                            f"{threshold}"), st["message"]
            assert any(x["type"] == "DisruptionTarget" and x["status"] == "True"
                       and x["reason"] == "TerminationByKubelet" for x in st["conditions"]), st["conditions"]
            # soft: SIGTERM within the grace period, the trap ran; hard: SIGKILL at once
            assert cstatus(hog)["state"]["terminated"]["exitCode"] == exit_code, cstatus(hog)
            assert "Evicted" in events(c, name)
            # its emptyDir went with it, so the disk came back and the node says so
            wait_for(lambda: fs_usage(nodefs) < 0.5, 30, f"the {name}'s emptyDir removed")
            wait_for(lambda: disk_pressure() == "False", 30, "DiskPressure back to False")
        q = c.pod("quiet")
        assert Cluster.ready(q) and cstatus(q)["restartCount"] == 0
        assert cstatus(q)["containerID"] == cstatus(quiet)["containerID"]
        assert "Evicted" not in events(c, "quiet")
    finally:
        leftovers = c.close()
        logs = {n: c.log(n)[-4000:] for n in ("agent", "runtime")}
        c.purge()
    assert not leftovers, f"host not clean after the eviction cluster stopped: {leftovers}\n{logs}"
    assert not any(str(base) in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
