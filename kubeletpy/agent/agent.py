"""The agent's main loop: who runs which pod, and everything shared between pod workers.

Sources of desired state: the API (an informer on pods with fieldSelector
spec.nodeName=<node>, which resumes from its resourceVersion after API restarts) and the
static pod directory. Source of actual state: the runtime, via PLEG. Each pod gets one
`PodWorker`; the agent adds node registration, lease, node status, admission, the status
manager (PATCH pods/status only on change), events, garbage collection and the HTTPS
server. Killing the agent leaves pods alone: nothing here is needed to keep them running,
and a new agent rebuilds all of it from the API and CRI labels.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Any

from kubeletpy.agent import admission, eviction, gc, staticpods
from kubeletpy.agent import labels as L
from kubeletpy.agent.backoff import Backoff
from kubeletpy.agent.config import AgentConfig
from kubeletpy.agent.cri import CRIClient, to_view
from kubeletpy.agent.events import Recorder
from kubeletpy.agent.node import NodeStatusMaker, without_heartbeats
from kubeletpy.agent.pleg import PLEG
from kubeletpy.agent.status import CRIContainer, now_rfc3339, set_runtime_name, status_patch
from kubeletpy.agent.volumes import VolumeManager
from kubeletpy.agent.worker import PodWorker
from kubeletpy.apiclient import (
    CONFIGMAPS,
    LEASES,
    NODES,
    PODS,
    SECRETS,
    AlreadyExistsError,
    ApiError,
    Client,
    ClientConfig,
    Informer,
    NotFoundError,
    TransportError,
    micro_time,
)

log = logging.getLogger("kubeletpy.agent")
LOOKUP_TTL = 2.0
IMAGE_CACHE_TTL = 10.0


def registry_host(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry_auth(secrets: list[dict[str, Any]], image: str) -> dict[str, str] | None:
    """CRI AuthConfig fields for `image` from dockerconfigjson/dockercfg Secrets (first match)."""
    host = registry_host(image)
    aliases = {host} | ({"index.docker.io", "registry-1.docker.io"} if host == "docker.io" else set())
    for sec in secrets:
        data = sec.get("data") or {}
        raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
        if not raw:
            continue
        try:
            cfg = json.loads(base64.b64decode(raw))
        except ValueError:
            continue
        for reg, entry in (cfg.get("auths", cfg) or {}).items():
            if reg.split("://")[-1].split("/")[0] not in aliases or not isinstance(entry, dict):
                continue
            out = {"server_address": host}
            for k in ("username", "password", "auth"):
                if entry.get(k):
                    out[k] = str(entry[k])
            if "auth" in out and "username" not in out:
                user, _, pw = base64.b64decode(out["auth"]).decode().partition(":")
                out["username"], out["password"] = user, pw
            return out
    return None


class StatusManager:
    """PATCH pods/status when, and only when, what the agent computed differs from what
    the API holds (or from what it sent last, while the watch has not caught up)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.patches = 0

    async def set(self, worker: PodWorker, status: dict[str, Any]) -> None:
        if worker.last_sent == status:
            return
        agent = self.agent
        md = worker.pod.get("metadata") or {}
        ns, name = md.get("namespace") or "default", md.get("name", "")
        api_pod = agent.pods.get(f"{ns}/{name}") if agent.pods else None
        if worker.static:
            if api_pod is None or not staticpods.is_mirror(api_pod):
                return  # the mirror pod does not exist (yet): nothing to report to
        elif api_pod is None or (api_pod.get("metadata") or {}).get("uid") != worker.uid:
            api_pod = worker.pod
        patch = status_patch(api_pod.get("status") or {}, status)
        if not patch:
            worker.last_sent = status
            return
        try:
            await agent.client.patch(PODS, name, {"status": patch}, ns, subresource="status")
            worker.trace(f"status patched: phase {status.get('phase')}")
            self.patches += 1
            worker.last_sent = status
        except NotFoundError:
            worker.last_sent = status
        except (ApiError, TransportError) as e:
            log.debug("status of %s/%s not written: %s", ns, name, e)
            worker.wake_in(1.0)


async def connect(cfg: AgentConfig) -> Client:
    """An API client with this node's identity.

    * --kubeconfig is used as is.
    * With --ca-file, --token is tried first: a token the API accepts (admin or an existing
      node token) is used directly.
    * Otherwise --token is the node-join token (which may only call /kubeletpy/join): the
      node credential stored by an earlier join in <root-dir>/kubeconfig is reused while it
      works; if there is none, the join token is exchanged for a per-node token, stored
      there with the CA the API server returned. Without --ca-file that first exchange
      trusts the server's certificate on first use (like a kubeadm join without a CA hash).
    """
    from kubeletpy.apiclient import load_kubeconfig
    from kubeletpy.controlplane import kubeconfig as kc

    agent_ua = f"kubelet/{cfg.node_name}"
    if cfg.kubeconfig:
        return Client.from_kubeconfig(cfg.kubeconfig, user_agent=agent_ua)
    if not cfg.server or not cfg.token:
        raise ValueError("need --server and --token (or --kubeconfig)")
    server = cfg.server.rstrip("/")
    ca = cfg.ca_file.read_bytes() if cfg.ca_file else b""
    if ca:
        client = Client(ClientConfig(server=server, token=cfg.token, ca_pem=ca), user_agent=agent_ua)
        try:
            await client.request("GET", NODES.path(), params={"limit": 1})
            return client
        except ApiError as e:
            await client.close()
            if e.code != 403:
                raise
    stored = cfg.root_dir / "kubeconfig"
    if stored.exists():
        sc = load_kubeconfig(stored)
        if sc.server == server:
            client = Client(sc, user_agent=agent_ua)
            try:
                await client.request("GET", NODES.path("", cfg.node_name))
                return client
            except NotFoundError:
                return client
            except (ApiError, TransportError) as e:
                log.info("stored node credential not usable (%s); joining again", e)
                await client.close()
    if not ca:
        log.warning("no --ca-file: trusting the API server's certificate for the join (first use)")
    client = Client(ClientConfig(server=server, token=cfg.token, ca_pem=ca, insecure=not ca), user_agent=agent_ua)
    try:
        cred = await client.request("POST", "/kubeletpy/join", body={"nodeName": cfg.node_name})
    finally:
        await client.close()
    ca_pem = base64.b64decode(cred["caData"]) if cred.get("caData") else ca
    cfg.root_dir.mkdir(parents=True, exist_ok=True)
    kc.write(stored, server, ca_pem, cred["token"], cred.get("user", f"system:node:{cfg.node_name}"))
    log.info("joined as %s; credential stored in %s", cred.get("user"), stored)
    return Client(ClientConfig(server=server, token=cred["token"], ca_pem=ca_pem), user_agent=agent_ua)


class Agent:
    def __init__(self, cfg: AgentConfig, client: Client) -> None:
        self.cfg = cfg
        self.client = client
        self.cri = CRIClient(cfg.cri_endpoint)
        self.node = NodeStatusMaker(cfg)
        self.node_ip = self.node.node_ip
        self.memory_capacity = 0
        self.backoff = Backoff(cfg.backoff_initial, cfg.backoff_max, cfg.backoff_reset)
        self.events = Recorder(client, cfg.node_name, self.node_ip)
        self.status = StatusManager(self)
        self.volumes = VolumeManager(cfg.pods_dir, self.lookup_sync)
        self.pleg = PLEG(self.cri, self._runtime_changed, cfg.relist_period, cfg.evented_relist_period)
        self.pressure: set[str] = set()  # node conditions under pressure now (eviction.py)
        self.image_first_seen: dict[str, float] = {}  # image id -> monotonic time (see gc.old_enough)
        self.workers: dict[str, PodWorker] = {}
        self.admitted: set[str] = set()
        self.pods: Informer | None = None
        self.static: dict[str, dict[str, Any]] = {}
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = {}
        self._views: dict[tuple[str, int], CRIContainer] = {}
        self._images: dict[str, float] = {}
        self._mirror_failed: set[str] = set()
        self.runtime_version = ""
        self.pod_cidr = ""
        self.server_port = cfg.port
        self.tasks: list[asyncio.Task[Any]] = []
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ shared helpers for workers

    async def container_view(self, c: Any) -> CRIContainer | None:
        key = (c.id, int(c.state))
        v = self._views.get(key)
        if v is None:
            try:
                v = to_view(await self.cri.container_status(c.id))
            except Exception:
                return None
            self._views[key] = v
        return v

    async def image_present(self, image: str) -> bool | None:
        """ImageStatus, with positive answers cached for a few seconds: 30 pods of one image
        starting together ask once, not 30 times (a removed image is noticed when the cache
        expires, or when CreateContainer fails)."""
        hit = self._images.get(image)
        if hit is not None and time.monotonic() - hit < IMAGE_CACHE_TTL:
            return True
        present = await self.cri.image_status(image) is not None
        if present:
            self._images[image] = time.monotonic()
        return True if present else None

    def hash_of(self, cid: str) -> str:
        c = self.pleg.snapshot.by_id.get(cid)
        return c.annotations.get(L.CONTAINER_HASH, "") if c is not None else ""

    def lookup_sync(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        hit = self._cache.get((kind, ns, name))
        return hit[1] if hit else None

    async def prefetch(self, pod: dict[str, Any]) -> None:
        """Fetch the ConfigMaps and Secrets the pod references (workers read them synchronously)."""
        ns = (pod.get("metadata") or {}).get("namespace") or "default"
        spec = pod.get("spec") or {}
        wanted: set[tuple[str, str]] = {("Secret", r.get("name", "")) for r in spec.get("imagePullSecrets") or []}
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                wanted.add(("ConfigMap", (v["configMap"] or {}).get("name", "")))
            if "secret" in v:
                wanted.add(("Secret", (v["secret"] or {}).get("secretName", "")))
            for s in (v.get("projected") or {}).get("sources") or []:
                if "configMap" in s:
                    wanted.add(("ConfigMap", (s["configMap"] or {}).get("name", "")))
                if "secret" in s:
                    wanted.add(("Secret", (s["secret"] or {}).get("name", "")))
        for c in ((spec.get("containers") or []) + (spec.get("initContainers") or [])
                  + (spec.get("ephemeralContainers") or [])):
            for e in c.get("envFrom") or []:
                if "configMapRef" in e:
                    wanted.add(("ConfigMap", e["configMapRef"].get("name", "")))
                if "secretRef" in e:
                    wanted.add(("Secret", e["secretRef"].get("name", "")))
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                if "configMapKeyRef" in vf:
                    wanted.add(("ConfigMap", vf["configMapKeyRef"].get("name", "")))
                if "secretKeyRef" in vf:
                    wanted.add(("Secret", vf["secretKeyRef"].get("name", "")))
        now = time.monotonic()

        async def fetch(kind: str, name: str) -> None:
            key = (kind, ns, name)
            hit = self._cache.get(key)
            if hit and now - hit[0] < LOOKUP_TTL:
                return
            try:
                obj: dict[str, Any] | None = await self.client.get(CONFIGMAPS if kind == "ConfigMap" else SECRETS,
                                                                   name, ns)
            except NotFoundError:
                obj = None
            except (ApiError, TransportError):
                if hit:
                    return  # keep the last known copy through API hiccups
                obj = None
            self._cache[key] = (now, obj)

        await asyncio.gather(*(fetch(k, n) for k, n in wanted if n))

    async def pull_auth(self, pod: dict[str, Any], image: str) -> dict[str, str] | None:
        """Credentials for the image's registry from the pod's imagePullSecrets."""
        ns = (pod.get("metadata") or {}).get("namespace") or "default"
        secrets = [self.lookup_sync("Secret", ns, r.get("name", ""))
                   for r in (pod.get("spec") or {}).get("imagePullSecrets") or []]
        return registry_auth([s for s in secrets if s], image)

    def alloc_for_env(self) -> dict[str, int]:
        cpu, mem, _ = self.node.allocatable_numbers()
        return {"cpu_milli": cpu, "memory": mem}

    async def finish_delete(self, pod: dict[str, Any]) -> None:
        """Everything is stopped and removed: let the API forget the pod."""
        md = pod.get("metadata") or {}
        try:
            await self.client.request("DELETE", PODS.path(md.get("namespace", ""), md.get("name", "")),
                                      body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                            "preconditions": {"uid": md.get("uid")}})
        except (NotFoundError, ApiError) as e:
            if not isinstance(e, NotFoundError) and e.code != 409:
                log.warning("final delete of %s/%s: %s", md.get("namespace"), md.get("name"), e)

    # ------------------------------------------------------------------ workers

    def _runtime_changed(self, uid: str) -> None:
        w = self.workers.get(uid)
        if w is not None:
            w.kick()
        self._views = {k: v for k, v in self._views.items() if k[0] in self.pleg.snapshot.by_id}

    def _admit(self, pod: dict[str, Any], worker: PodWorker) -> None:
        uid = worker.uid
        phase = (pod.get("status") or {}).get("phase")
        if uid in self.admitted or phase in ("Succeeded", "Failed") or uid in self.pleg.snapshot.sandboxes:
            self.admitted.add(uid)
            return
        cpu, mem, pods = self.node.allocatable_numbers()
        active = [w.pod for u, w in self.workers.items()
                  if u in self.admitted and u != uid and not w.done and w.rejected is None and w.terminal is None
                  and (w.pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        rej = admission.admit(pod, active, admission.Allocatable(cpu, mem, pods), self.pressure)
        if rej is not None:
            worker.rejected = (rej.reason, rej.message)
            self.events.emit(pod, "Warning", rej.reason, rej.message)
        else:
            self.admitted.add(uid)

    def _ensure_worker(self, pod: dict[str, Any]) -> None:
        md = pod.get("metadata") or {}
        uid = md.get("uid", "")
        if not uid:
            return
        w = self.workers.get(uid)
        if w is not None:
            if w.done:
                return
            w.update(pod)
            return
        w = PodWorker(self, pod)
        self.workers[uid] = w
        self._admit(pod, w)
        w.task = asyncio.create_task(self._run_worker(w))

    async def _run_worker(self, w: PodWorker) -> None:
        try:
            await w.run()
        finally:
            self.admitted.discard(w.uid)

    def _on_pod(self, *objs: dict[str, Any]) -> None:
        pod = objs[-1]
        if staticpods.is_mirror(pod):
            self._mirror_seen(pod)
            return
        self._ensure_worker(pod)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        if staticpods.is_mirror(pod):
            return
        w = self.workers.get((pod.get("metadata") or {}).get("uid", ""))
        if w is not None:
            w.removed = True
            w.kick()

    # ------------------------------------------------------------------ static pods

    def _mirror_seen(self, mirror: dict[str, Any]) -> None:
        h = ((mirror.get("metadata") or {}).get("annotations") or {}).get(L.CONFIG_MIRROR, "")
        w = self.workers.get(h)
        if w is not None and w.static:
            w.last_sent = None
            w.kick()
            if (mirror.get("metadata") or {}).get("deletionTimestamp") and h in self.static:
                self.tasks.append(asyncio.create_task(self._ensure_mirror(self.static[h])))

    async def _static_loop(self) -> None:
        while True:
            try:
                await self._static_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.warning("static pods: %s", e)
            await asyncio.sleep(2.0)

    async def _static_once(self) -> None:
        found = await asyncio.to_thread(staticpods.scan, self.cfg.manifests_dir, self.cfg.node_name)
        for uid in [u for u in self.static if u not in found]:
            pod = self.static.pop(uid)
            w = self.workers.get(uid)
            if w is not None:
                w.removed = True
                w.kick()
            md = pod["metadata"]
            with contextlib.suppress(ApiError, TransportError):
                mirror = await self.client.get(PODS, md["name"], md["namespace"])
                if staticpods.is_mirror(mirror):
                    await self.client.delete(PODS, md["name"], md["namespace"], grace_period=0)
        for uid, pod in found.items():
            if uid not in self.static:
                self.static[uid] = pod
                self._ensure_worker(pod)
            await self._ensure_mirror(pod)

    async def _ensure_mirror(self, pod: dict[str, Any]) -> None:
        md = pod["metadata"]
        key = f"{md['namespace']}/{md['name']}"
        current = self.pods.get(key) if self.pods else None
        if current is not None:
            ann = (current.get("metadata") or {}).get("annotations") or {}
            if ann.get(L.CONFIG_MIRROR) == md["uid"] and not current["metadata"].get("deletionTimestamp"):
                return
            # deleted through the API (or stale): finish the deletion now; the static pod
            # itself keeps running and the next pass mirrors it again
            with contextlib.suppress(ApiError, TransportError):
                await self.client.delete(PODS, md["name"], md["namespace"], grace_period=0,
                                         preconditions={"uid": current["metadata"].get("uid", "")})
            return
        try:
            await self.client.create(PODS, staticpods.mirror_of(pod), md["namespace"])
        except AlreadyExistsError:
            pass
        except (ApiError, TransportError) as e:
            level = logging.DEBUG if key in self._mirror_failed else logging.WARNING
            self._mirror_failed.add(key)
            log.log(level, "mirror pod %s not created (the static pod runs regardless): %s", key, e)

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        """Finished workers go; runtime pods nobody wants (deleted while the agent was down)
        are killed and removed."""
        while True:
            await asyncio.sleep(2.0)
            try:
                for uid in [u for u, w in self.workers.items() if w.done]:
                    self.workers.pop(uid, None)
                if self.pods is None or not self.pods.synced or not self.pleg.healthy:
                    continue
                for p in self.pods.items():  # a missed or finished-too-early event never strands a pod
                    uid = (p.get("metadata") or {}).get("uid", "")
                    if uid and uid not in self.workers and not staticpods.is_mirror(p):
                        self._ensure_worker(p)
                wanted = {(p.get("metadata") or {}).get("uid") for p in self.pods.items()} | set(self.static)
                for uid in list(self.pleg.snapshot.sandboxes) + list(self.pleg.snapshot.containers):
                    if uid and uid not in wanted and uid not in self.workers:
                        sbs = self.pleg.snapshot.sandboxes.get(uid) or []
                        name = sbs[0].metadata.name if sbs else "orphan"
                        ns = sbs[0].metadata.namespace if sbs else "default"
                        orphan = {"metadata": {"uid": uid, "name": name, "namespace": ns}, "spec": {
                            "terminationGracePeriodSeconds": 2}}
                        w = PodWorker(self, orphan)
                        w.removed = True
                        self.workers[uid] = w
                        w.task = asyncio.create_task(self._run_worker(w))
                live = set(self.workers) | set(self.pleg.snapshot.sandboxes)
                for uid in self.volumes.known_pods():
                    if uid not in live:
                        await asyncio.to_thread(self.volumes.teardown, uid)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.warning("housekeeping: %s", e)

    # ------------------------------------------------------------------ node

    async def _runtime_info(self) -> tuple[bool, str]:
        try:
            v = await self.cri.version()
            self.runtime_version = f"{v.runtime_name}://{v.runtime_version}"
            set_runtime_name(v.runtime_name)
            st = await self.cri.status()
        except Exception as e:  # noqa: BLE001
            return False, f"container runtime is down: {e}"
        bad = [f"{c.type}=false reason:{c.reason} message:{c.message}" for c in st.status.conditions if not c.status]
        if bad:
            return False, "container runtime not ready: " + "; ".join(bad)
        return True, ""

    async def register(self) -> None:
        ok, _ = await self._runtime_info()
        from kubeletpy.agent.node import meminfo

        self.memory_capacity = meminfo().get("MemTotal", 0)
        body = self.node.node_object()
        while True:
            try:
                await self.client.create(NODES, body)
                log.info("registered node %s", self.cfg.node_name)
                break
            except AlreadyExistsError:
                break
            except (ApiError, TransportError) as e:
                log.warning("node registration failed: %s; retrying", e)
                await asyncio.sleep(2.0)
        await self.push_node_status(force=True)

    async def push_node_status(self, force: bool = False) -> None:
        ready, msg = await self._runtime_info()
        if ready and not self.pleg.healthy and self.pleg.relists > 0:
            ready, msg = False, "PLEG is not healthy: the runtime does not answer list calls"
        try:
            images = await self.cri.list_images()
        except Exception:  # noqa: BLE001
            images = []
        status = self.node.status(self.runtime_version or "kubeletpy://unknown", ready, msg, images,
                                  self.server_port, now_rfc3339())
        cmp = without_heartbeats(status)
        if not force and cmp == self._last_node and time.monotonic() - self._last_node_push < self.cfg.node_status_report:
            return
        await self.client.patch(NODES, self.cfg.node_name, {"status": status}, subresource="status")
        self._last_node, self._last_node_push = cmp, time.monotonic()

    _last_node: dict[str, Any] | None = None
    _last_node_push = 0.0

    async def _node_loop(self) -> None:
        fast_until = time.monotonic() + 60
        while True:
            try:
                node = await self.client.get(NODES, self.cfg.node_name)
                cidr = (node.get("spec") or {}).get("podCIDR") or ""
                if cidr and cidr != self.pod_cidr:
                    await self.cri.update_runtime_config(cidr)
                    self.pod_cidr = cidr
                    log.info("pod CIDR %s handed to the runtime", cidr)
                await self.push_node_status()
            except NotFoundError:
                await self.register()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.warning("node status: %s", e)
            period = 1.0 if not self.pod_cidr and time.monotonic() < fast_until else self.cfg.node_status_check
            await asyncio.sleep(period)

    async def _lease_loop(self) -> None:
        name = self.cfg.node_name
        while True:
            body = {"spec": {"holderIdentity": name, "leaseDurationSeconds": self.cfg.lease_duration,
                             "renewTime": micro_time()}}
            try:
                try:
                    await self.client.patch(LEASES, name, body, "kube-node-lease")
                except NotFoundError:
                    node = await self.client.get(NODES, name)
                    await self.client.create(LEASES, {
                        "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [{
                            "apiVersion": "v1", "kind": "Node", "name": name,
                            "uid": node["metadata"]["uid"]}]}, **body}, "kube-node-lease")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                log.warning("lease renewal: %s", e)
            await asyncio.sleep(self.cfg.lease_renew)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.cfg.root_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.port >= 0:
            # Listen before registering, so the Node's first status already carries the real
            # port (with --port 0 it is only known now) and the API server can proxy at once.
            from kubeletpy.agent.server import AgentServer

            self.http = AgentServer(self)
            self.server_port = await self.http.start()
        await self.register()
        try:
            await self.pleg.relist_now()
            self.pleg.healthy = True
        except Exception as e:  # noqa: BLE001
            log.warning("first relist failed: %s", e)
        self.pods = Informer(self.client, PODS, field_selector=f"spec.nodeName={self.cfg.node_name}")
        self.pods.add_handlers(self._on_pod, self._on_pod, self._on_pod_delete)
        spawn = self.tasks.append
        spawn(asyncio.create_task(self.pods.run()))
        spawn(asyncio.create_task(self.pleg.run()))
        spawn(asyncio.create_task(self.events.run()))
        spawn(asyncio.create_task(self._node_loop()))
        spawn(asyncio.create_task(self._lease_loop()))
        spawn(asyncio.create_task(self._housekeeping()))
        spawn(asyncio.create_task(gc.run(self)))
        spawn(asyncio.create_task(eviction.run(self)))
        if self.cfg.port >= 0 and self.cfg.rotate_server_certificates and not self.cfg.tls_cert:
            from kubeletpy.agent import certificate

            spawn(asyncio.create_task(certificate.run(self)))
        if self.cfg.manifests_dir is not None:
            spawn(asyncio.create_task(self._static_loop()))
        self.ready.set()

    async def stop(self) -> None:
        """Stop the agent only: pods keep running (a new agent adopts them)."""
        for t in self.tasks:
            t.cancel()
        for w in self.workers.values():
            if w.task is not None:
                w.task.cancel()
            w._stop_probes()
        with contextlib.suppress(Exception):
            if getattr(self, "http", None) is not None:
                await self.http.stop()
        await self.client.close()
        await self.cri.close()

