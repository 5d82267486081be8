"""One pod, one worker: drive the runtime towards the pod spec, report what happened.

`sync` is level-triggered and idempotent: it reads the runtime's state for this pod (from
the PLEG snapshot, never from agent memory), decides the next steps like the kubelet's
SyncPod (sandbox, then init containers in order, then containers, restarts under the
restart policy and CrashLoopBackOff, liveness kills), and computes the status. Any trigger
(API update, runtime event, probe result change, backoff expiry, resync timer) just
causes another sync, so a missed event costs at most one resync period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from kubeletpy.agent import cri as cric
from kubeletpy.agent import envvars, podconfig, probes, qos
from kubeletpy.agent import labels as L
from kubeletpy.agent.status import EXITED, RUNNING, ContainerView, CRIContainer, build_status, now_rfc3339
from kubeletpy.agent.volumes import VolumeError
from kubeletpy.apiclient import parse_time

if TYPE_CHECKING:
    from kubeletpy.agent.agent import Agent

log = logging.getLogger("kubeletpy.agent.worker")

# The kubelet bounds a hook only by the runtime request timeout (2 min).
POST_START_TIMEOUT = 120.0
INIT, REGULAR, EPHEMERAL = "init", "regular", "ephemeral"
# The spec list each kind of container is in: events name the container by it (fieldPath).
SPEC_FIELD = {INIT: "initContainers", REGULAR: "containers", EPHEMERAL: "ephemeralContainers"}


def _kind(label: str) -> str:
    """A container's kind from its label; containers of an older agent have none (regular)."""
    return label if label in SPEC_FIELD else REGULAR


def _api_ready(pod: dict[str, Any], name: str, cid: str) -> bool:
    for s in (pod.get("status") or {}).get("containerStatuses") or []:
        if s.get("name") == name and s.get("containerID", "").endswith(cid):
            return bool(s.get("ready"))
    return False


class PodWorker:
    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        self.agent = agent
        self.pod = pod
        md = pod.get("metadata") or {}
        self.uid: str = md.get("uid", "")
        self.key = f"{md.get('namespace')}/{md.get('name')}"
        self.trigger = asyncio.Event()
        self.trigger.set()
        self.removed = False            # gone from the API (or static manifest removed)
        self.static = bool((md.get("annotations") or {}).get(L.CONFIG_SOURCE) == "file")
        self.rejected: tuple[str, str] | None = None
        self.terminal: tuple[str, str, str] | None = None
        self.done = False
        self.terminal_grace: int | None = None  # eviction kills at once, whatever the pod asked for
        self.volumes_removed = False
        self.task: asyncio.Task[None] | None = None
        self.probe_states: dict[tuple[str, str], probes.ProbeState] = {}
        self.probe_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.seen_exits: set[str] = set()
        self.waiting: dict[str, tuple[str, str]] = {}   # container -> (reason, message)
        self.next_wakeup: float | None = None
        self.start_time: str | None = (pod.get("status") or {}).get("startTime")
        self.last_sent: dict[str, Any] | None = None
        self.sandbox_ip: list[str] = []
        self.terminated_at: float | None = None
        self.events_sent: set[tuple[str, str]] = set()
        # image -> the last failed pull's error, shown in ImagePullBackOff until the next attempt:
        # this worker re-syncs on its own status echo, so ErrImagePull (which carries the error)
        # is replaced by ImagePullBackOff within moments
        self.pull_errors: dict[str, str] = {}
        self.born = time.monotonic()
        self.stale: int | None = None   # PLEG mark taken when this worker last changed the runtime

    def trace(self, what: str) -> None:
        """Start-up timeline at debug level (where does pod start latency go?)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s +%.3fs %s", self.key, time.monotonic() - self.born, what)

    # ------------------------------------------------------------------ plumbing

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.trigger.set()

    def kick(self) -> None:
        self.trigger.set()

    def event(self, etype: str, reason: str, message: str, container: str = "", kind: str = REGULAR) -> None:
        fp = f"spec.{SPEC_FIELD[kind]}{{{container}}}" if container else ""
        self.agent.events.emit(self.pod, etype, reason, message, fp)

    async def run(self) -> None:
        while not self.done:
            timeout = self.agent.cfg.resync_period
            if self.next_wakeup is not None:
                timeout = max(0.0, min(timeout, self.next_wakeup - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.trigger.wait(), timeout)
            self.trigger.clear()
            self.next_wakeup = None
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a pod's failure must not stop its worker
                log.warning("sync %s failed: %s", self.key, e, exc_info=log.isEnabledFor(logging.DEBUG))
                self.wake_in(1.0)
        self._stop_probes()

    def wake_in(self, seconds: float) -> None:
        t = time.monotonic() + seconds
        if self.next_wakeup is None or t < self.next_wakeup:
            self.next_wakeup = t

    # ------------------------------------------------------------------ state

    def _runtime_state(self) -> tuple[list[Any], list[Any]]:
        snap = self.agent.pleg.snapshot
        return snap.sandboxes.get(self.uid, []), snap.containers.get(self.uid, [])

    def _deleting(self) -> bool:
        return self.removed or bool((self.pod.get("metadata") or {}).get("deletionTimestamp"))

    def grace_period(self) -> int:
        md = self.pod.get("metadata") or {}
        if md.get("deletionGracePeriodSeconds") is not None:
            return int(md["deletionGracePeriodSeconds"])
        return int((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))

    # ------------------------------------------------------------------ sync

    async def sync(self) -> None:
        if self.stale is not None:
            # this worker changed the runtime: act only on a relist that began afterwards
            if not self.agent.pleg.fresh_since(self.stale):
                await self.agent.pleg.relist_now()
            self.stale = None
        if self._deleting():
            await self.terminate()
            return
        if self.rejected is not None:
            await self.push_status([], [], terminal=("Failed", *self.rejected))
            return
        phase = (self.pod.get("status") or {}).get("phase")
        if self.terminal is not None or phase in ("Succeeded", "Failed"):
            grace = self.terminal_grace if self.terminal_grace is not None else self.grace_period()
            await self.kill_all(reason="pod is terminal", grace=grace, stop_sandbox=True)
            await self.report_current()
            if not self.volumes_removed:
                # a finished pod's volumes go now (the kubelet keeps none): an evicted pod's
                # emptyDir is what frees the disk it was evicted for
                await asyncio.to_thread(self.agent.volumes.teardown, self.uid)
                self.volumes_removed = True
            return
        if self.start_time is None:
            self.start_time = now_rfc3339()
        ads = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if ads is not None:
            started = parse_time(self.start_time) or time.time()
            left = started + int(ads) - time.time()
            if left <= 0:
                self.terminal = ("Failed", "DeadlineExceeded",
                                 "Pod was active on the node longer than the specified deadline")
                self.event("Normal", "DeadlineExceeded", self.terminal[2])
                await self.kill_all(reason="deadline exceeded", grace=self.grace_period(), stop_sandbox=True)
                await self.report_current()
                return
            self.wake_in(left)
        await self._sync_running()

    async def _sync_running(self) -> None:
        agent = self.agent
        spec = self.pod.get("spec") or {}
        sandboxes, containers = self._runtime_state()
        history = containers  # every instance, in old sandboxes too: ephemeral containers run once per pod
        ready = [s for s in sandboxes if s.state == cric.pb.SANDBOX_READY]
        ready.sort(key=lambda s: s.created_at, reverse=True)
        await agent.prefetch(self.pod)
        try:
            vol_paths = await asyncio.to_thread(agent.volumes.setup, self.pod)
        except (VolumeError, OSError) as e:
            self._set_all_waiting(self._default_waiting(), "")
            self.event("Warning", "FailedMount", f"MountVolume.SetUp failed: {e}")
            self.wake_in(2.0)
            await self.report_current()
            return
        if not ready:
            restart_policy = spec.get("restartPolicy") or "Always"
            regular = {c.get("name") for c in spec.get("containers") or []}
            ran = [c for c in containers if c.labels.get(L.CONTAINER_NAME) in regular]
            if sandboxes or containers:
                # The sandbox died under us: everything in it goes, a new one starts (unless
                # a Never pod already ran -- then it is over).
                await self.kill_all(reason="sandbox changed", grace=2, stop_sandbox=True)
                if restart_policy == "Never" and ran:
                    await self.report_current()
                    return
            attempt = max((s.metadata.attempt + 1 for s in sandboxes), default=0)
            cfg = podconfig.sandbox_config(self.pod, attempt, agent.cfg.pod_log_dir, agent.cfg.cgroup_root)
            self.trace("RunPodSandbox")
            try:
                sid = await agent.cri.run_pod_sandbox(cfg)
                self.trace("sandbox ready")
            except Exception as e:
                self._set_all_waiting(self._default_waiting(), "")
                self.event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {cric.errmsg(e)}")
                self.wake_in(3.0)
                await self.report_current()
                return
            # Go on with the sandbox's own status instead of waiting for a relist (pod start
            # latency); it is written through into the PLEG snapshot for the next syncs.
            try:
                st = await agent.cri.pod_sandbox_status(sid)
            except Exception:
                self.stale = agent.pleg.mark()  # unknown state: the next sync relists first
                self.wake_in(0.5)
                return
            agent.pleg.record_sandbox(st)
            ready = [st]
            self.sandbox_ip = self._ips_of(st)
            containers = []
        sandbox = ready[0]
        sb_cfg = podconfig.sandbox_config(self.pod, sandbox.metadata.attempt, agent.cfg.pod_log_dir,
                                          agent.cfg.cgroup_root)
        if not self.sandbox_ip or self.sandbox_ip[0] == "":
            self.sandbox_ip = await self._pod_ips(sandbox.id)
        in_sandbox = [c for c in containers if c.pod_sandbox_id == sandbox.id]
        init_specs = spec.get("initContainers") or []
        init_views, init_ok = await self._sync_init(init_specs, in_sandbox, containers, sandbox.id, sb_cfg,
                                                   vol_paths)
        views = await self._sync_regular(spec.get("containers") or [], in_sandbox, containers, sandbox.id, sb_cfg,
                                         vol_paths, start=init_ok)
        eph_views = await self._sync_ephemeral(spec.get("ephemeralContainers") or [], history, sandbox.id,
                                               sb_cfg, vol_paths, init_views + views)
        await self.push_status(init_views, views, ephemeral_views=eph_views)

    async def _pod_ips(self, sid: str) -> list[str]:
        try:
            st = await self.agent.cri.pod_sandbox_status(sid)
        except Exception:
            return []
        return self._ips_of(st)

    def _ips_of(self, st: Any) -> list[str]:
        if (self.pod.get("spec") or {}).get("hostNetwork"):
            return [self.agent.node_ip]
        ips = [st.network.ip] if st.network.ip else []
        return ips + [a.ip for a in st.network.additional_ips if a.ip]

    # ------------------------------------------------------------------ containers

    async def _instances(self, name: str, kind: str, containers: list[Any]) -> list[CRIContainer]:
        """This container's instances, newest first, with full CRI status (cached when final)."""
        mine = [c for c in containers if c.labels.get(L.CONTAINER_NAME) == name
                and c.labels.get(L.CONTAINER_KIND, REGULAR) == kind]
        out = []
        for c in mine:
            v = await self.agent.container_view(c)
            if v is not None:
                out.append(v)
        out.sort(key=lambda v: (v.restart_count, v.created_at), reverse=True)
        return out

    def _default_waiting(self) -> str:
        """The waiting reason of a container with no instance and no error of its own, as the
        kubelet words it: behind init containers it waits for them, not for its creation (this
        is also what a pod whose init container failed for good shows)."""
        return "PodInitializing" if (self.pod.get("spec") or {}).get("initContainers") else "ContainerCreating"

    def _set_all_waiting(self, reason: str, message: str) -> None:
        for c in (self.pod.get("spec") or {}).get("containers") or []:
            self.waiting.setdefault(c.get("name", ""), (reason, message))

    def _should_restart(self, exit_code: int, kind: str) -> bool:
        policy = (self.pod.get("spec") or {}).get("restartPolicy") or "Always"
        if kind == INIT:
            return policy != "Never" and exit_code != 0
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    async def _view(self, c: dict[str, Any], kind: str, in_sandbox: list[Any],
                    all_ctrs: list[Any]) -> tuple[ContainerView, int]:
        """A container's current and previous instance in this sandbox; restarts count across sandboxes."""
        name = c.get("name", "")
        inst = await self._instances(name, kind, in_sandbox)
        history = await self._instances(name, kind, all_ctrs)
        count = history[0].restart_count if history else 0
        return ContainerView(name, c.get("image", ""), inst[0] if inst else None,
                             inst[1] if len(inst) > 1 else None, count), count

    async def _sync_init(self, specs: list[dict[str, Any]], in_sandbox: list[Any], all_ctrs: list[Any], sid: str,
                         sb_cfg: Any, vols: dict[str, Any]) -> tuple[list[ContainerView], bool]:
        views: list[ContainerView] = []
        blocked = False
        for c in specs:
            v, count = await self._view(c, INIT, in_sandbox, all_ctrs)
            views.append(v)
            if blocked:
                v.waiting_reason = "PodInitializing"
                continue
            cur = v.current
            if cur is not None and cur.state == EXITED and cur.exit_code == 0:
                continue
            blocked = True
            if cur is not None and cur.state == RUNNING:
                continue
            if cur is not None and cur.state == EXITED:
                if not self._should_restart(cur.exit_code, INIT):
                    continue  # phase becomes Failed
                if not await self._backoff_ok(v, cur, INIT):
                    continue
                v.previous, v.current = cur, None
                v.restart_count = count + 1
            await self._start(c, INIT, v, sid, sb_cfg, vols)
        return views, not blocked

    async def _sync_regular(self, specs: list[dict[str, Any]], in_sandbox: list[Any], all_ctrs: list[Any], sid: str,
                            sb_cfg: Any, vols: dict[str, Any], start: bool) -> list[ContainerView]:
        views = []
        for c in specs:
            name = c.get("name", "")
            v, count = await self._view(c, REGULAR, in_sandbox, all_ctrs)
            views.append(v)
            if not start:
                v.waiting_reason = "PodInitializing"
                continue
            cur = v.current
            if cur is not None and cur.state == RUNNING:
                reason = self._kill_reason(c, cur)
                if reason:
                    await self._kill(cur.id, name, self.grace_period(), reason, c)
                    await self.agent.pleg.relist_now()
                    self.kick()
                else:
                    self._ensure_probes(c, cur)
                    v.ready, v.started = self._readiness(c, cur)
                continue
            if cur is not None and cur.state == EXITED:
                self._stop_probes(cur.id)
                if not self._should_restart(cur.exit_code, REGULAR):
                    continue
                v.will_restart = True
                if not await self._backoff_ok(v, cur, REGULAR):
                    continue
                v.previous, v.current = cur, None
                v.restart_count = count + 1
            elif cur is not None and cur.state != RUNNING:
                if await self._resume_created(v, cur):
                    continue
            await self._start(c, REGULAR, v, sid, sb_cfg, vols)
        return views

    async def _resume_created(self, v: ContainerView, cur: CRIContainer) -> bool:
        """A container created but never started (the agent died in between): start it now.
        False when that failed (it is removed, so a new one is created in its place)."""
        try:
            await self.agent.cri.start_container(cur.id)
            await self.agent.pleg.relist_now()
            return True
        except Exception:
            with contextlib.suppress(Exception):
                await self.agent.cri.remove_container(cur.id)
            v.current = None
            return False

    async def _ephemeral_view(self, c: dict[str, Any], all_ctrs: list[Any]) -> ContainerView:
        """An ephemeral container's one instance, in whichever sandbox it ran: it is never
        restarted, not even when the sandbox is replaced."""
        name = c.get("name", "")
        inst = await self._instances(name, EPHEMERAL, all_ctrs)
        v = ContainerView(name, c.get("image", ""), inst[0] if inst else None)
        if v.current is None:
            v.waiting_reason, v.waiting_message = self.waiting.get(name, ("ContainerCreating", ""))
        return v

    async def _sync_ephemeral(self, specs: list[dict[str, Any]], all_ctrs: list[Any], sid: str, sb_cfg: Any,
                              vols: dict[str, Any], others: list[ContainerView]) -> list[ContainerView]:
        """Start the ephemeral containers that have never run (the kubelet does not wait for init
        containers: debugging a pod whose init container fails is the point). No probes, no
        restarts, no say in the pod's phase or readiness."""
        views = []
        current = {o.name: o.current for o in others if o.current is not None}
        for c in specs:
            v = await self._ephemeral_view(c, all_ctrs)
            views.append(v)
            cur = v.current
            if cur is not None and (cur.state in (RUNNING, EXITED) or await self._resume_created(v, cur)):
                continue
            target = c.get("targetContainerName") or ""
            if target and target not in current:
                # the kubelet's getTargetID: the target must have a container to join
                name = c.get("name", "")
                msg = f"unable to find target container {target}"
                v.waiting_reason, v.waiting_message = self.waiting[name] = ("CreateContainerConfigError", msg)
                self.event("Warning", "Failed", f"Error: {msg}", name, EPHEMERAL)
                self.wake_in(2.0)
                continue
            await self._start(c, EPHEMERAL, v, sid, sb_cfg, vols, current[target].id if target else "")
        return views

    def _kill_reason(self, c: dict[str, Any], cur: CRIContainer) -> str:
        st = self.probe_states.get((cur.id, probes.LIVENESS))
        if st is not None and st.result == probes.FAILURE:
            return f"Container {c.get('name')} failed liveness probe, will be restarted"
        want = L.container_hash(c)
        have = self.agent.hash_of(cur.id)
        if have and have != want:
            return f"Container {c.get('name')} definition changed, will be restarted"
        return ""

    async def _backoff_ok(self, v: ContainerView, cur: CRIContainer, kind: str) -> bool:
        """True when the exited container may be restarted now; otherwise CrashLoopBackOff."""
        bo = self.agent.backoff
        key = (self.uid, f"{kind}/{v.name}")
        if cur.id not in self.seen_exits:
            self.seen_exits.add(cur.id)
            if cur.started_at and cur.finished_at and (cur.finished_at - cur.started_at) / 1e9 >= bo.reset_after:
                bo.forget(key)
        remaining = bo.remaining(key, cur.finished_at / 1e9 if cur.finished_at else time.time())
        if remaining > 0:
            delay = bo.current_delay(key)
            msg = (f"back-off {delay:g}s restarting failed container={v.name} pod={self.pod['metadata']['name']}"
                   f"_{self.pod['metadata'].get('namespace')}({self.uid})")
            v.waiting_reason, v.waiting_message, v.will_restart = "CrashLoopBackOff", msg, True
            if (cur.id, "BackOff") not in self.events_sent:
                self.events_sent.add((cur.id, "BackOff"))
                self.event("Warning", "BackOff", "Back-off restarting failed container", v.name, kind)
            self.wake_in(remaining + 0.05)
            return False
        bo.next(key)
        return True

    async def _ensure_image(self, c: dict[str, Any], kind: str, sb_cfg: Any) -> str | None:
        """The image to create from, after the pull policy; None (and a waiting reason) if
        it is not available."""
        agent = self.agent
        image = c.get("image", "")
        name = c.get("name", "")
        policy = c.get("imagePullPolicy") or ("Always" if image.endswith(":latest") or ":" not in
                                              image.rsplit("/", 1)[-1] else "IfNotPresent")
        present = await agent.image_present(image)
        if policy == "Never" or (policy == "IfNotPresent" and present is not None):
            if present is None:
                msg = f'Container image "{image}" is not present with pull policy of Never'
                self.waiting[name] = ("ErrImageNeverPull", msg)
                self.event("Warning", "ErrImageNeverPull", msg, name, kind)
                return None
            if (f"pulled/{name}", image) not in self.events_sent:  # once per container, as restarts go
                self.events_sent.add((f"pulled/{name}", image))
                self.event("Normal", "Pulled", f'Container image "{image}" already present on machine', name, kind)
            return image
        key = (self.uid, f"image/{image}")
        remaining = agent.backoff.remaining(key, agent.backoff.last_event(key))
        if remaining > 0:
            msg = f'Back-off pulling image "{image}"'
            if ("pull-backoff", image) not in self.events_sent:
                self.events_sent.add(("pull-backoff", image))  # once per failed pull, like BackOff of containers
                self.event("Normal", "BackOff", msg, name, kind)
            last = self.pull_errors.get(image)
            self.waiting[name] = ("ImagePullBackOff", f"{msg}: ErrImagePull: {last}" if last else msg)
            self.wake_in(remaining + 0.05)
            return None
        self.pull_errors.pop(image, None)
        self.event("Normal", "Pulling", f'Pulling image "{image}"', name, kind)
        t0 = time.monotonic()
        try:
            auth = await agent.pull_auth(self.pod, image)
            await agent.cri.pull_image(image, auth, sb_cfg)
        except Exception as e:
            agent.backoff.next(key)
            msg = f'Failed to pull image "{image}": {cric.errmsg(e)}'
            self.waiting[name] = ("ErrImagePull", msg)
            self.pull_errors[image] = cric.errmsg(e)
            self.events_sent.discard(("pull-backoff", image))
            self.event("Warning", "Failed", msg, name, kind)
            self.wake_in(agent.backoff.remaining(key, agent.backoff.last_event(key)) + 0.05)
            return None
        agent.backoff.forget(key)
        self.event("Normal", "Pulled", f'Successfully pulled image "{image}" in {time.monotonic() - t0:.3f}s',
                   name, kind)
        return image

    async def _start(self, c: dict[str, Any], kind: str, v: ContainerView, sid: str, sb_cfg: Any,
                     vols: dict[str, Any], target_id: str = "") -> None:
        agent = self.agent
        name = c.get("name", "")
        image = await self._ensure_image(c, kind, sb_cfg)
        if image is None:
            v.waiting_reason, v.waiting_message = self.waiting.get(name, ("ErrImagePull", ""))
            return
        try:
            env = envvars.resolve(self.pod, c, agent.lookup_sync, pod_ip=(self.sandbox_ip or [""])[0],
                                  node_name=agent.cfg.node_name, host_ip=agent.node_ip,
                                  node_alloc=agent.alloc_for_env())
            cfg = podconfig.container_config(self.pod, c, kind, v.restart_count, env, vols, agent.memory_capacity,
                                             image, target_id)
        except (envvars.EnvError, KeyError, OSError) as e:
            v.waiting_reason, v.waiting_message = "CreateContainerConfigError", str(e)
            self.event("Warning", "Failed", f"Error: {e}", name, kind)
            self.wake_in(2.0)
            return
        self.trace(f"CreateContainer {name}")
        try:
            cid = await agent.cri.create_container(sid, cfg, sb_cfg)
        except Exception as e:
            msg = cric.errmsg(e)
            v.waiting_reason, v.waiting_message = "CreateContainerError", msg
            self.event("Warning", "Failed", f"Error: {msg}", name, kind)
            self.wake_in(2.0)
            return
        self.event("Normal", "Created", f"Created container {name}", name, kind)
        try:
            await agent.cri.start_container(cid)
        except Exception as e:
            msg = cric.errmsg(e)
            v.waiting_reason, v.waiting_message = "RunContainerError", msg
            self.event("Warning", "Failed", f"Error: {msg}", name, kind)
            self.wake_in(2.0)
            await agent.pleg.relist_now()
            return
        self.trace(f"started {name}")
        self.event("Normal", "Started", f"Started container {name}", name, kind)
        if not await self._post_start(c, cid, name, kind):
            await agent.pleg.relist_now()
            return
        self.waiting.pop(name, None)
        try:
            raw = await agent.cri.container_status(cid)
        except Exception:
            self.stale = agent.pleg.mark()  # unknown state: the next sync relists first
            raw = None
        if raw is not None:
            agent.pleg.record_container(raw, sid)
            cur = cric.to_view(raw)
            if cur is not None:
                v.current = cur
                if cur.state == RUNNING and kind == REGULAR:
                    self._ensure_probes(c, cur)
                    v.ready, v.started = self._readiness(c, cur)
        if kind == INIT:
            self.kick()  # the next sync waits for it and starts the next init container
        # (a started regular container needs no immediate resync: PLEG sees it change)

    # ------------------------------------------------------------------ probes

    def _readiness(self, c: dict[str, Any], cur: CRIContainer) -> tuple[bool, bool | None]:
        started: bool | None = None
        if c.get("startupProbe"):
            st = self.probe_states.get((cur.id, probes.STARTUP))
            started = st is not None and st.result == probes.SUCCESS
            if not started:
                return False, False
        if c.get("readinessProbe"):
            st = self.probe_states.get((cur.id, probes.READINESS))
            return (st is not None and st.result == probes.SUCCESS), started
        return True, started

    def _ensure_probes(self, c: dict[str, Any], cur: CRIContainer) -> None:
        for kind, field in ((probes.STARTUP, "startupProbe"), (probes.LIVENESS, "livenessProbe"),
                            (probes.READINESS, "readinessProbe")):
            p = c.get(field)
            key = (cur.id, kind)
            if not p or key in self.probe_tasks:
                continue
            spec = probes.ProbeSpec.from_api(kind, p)
            state = probes.ProbeState(spec)
            if kind == probes.READINESS and _api_ready(self.pod, c.get("name", ""), cur.id):
                state.result = probes.SUCCESS  # a restarted agent keeps a ready pod ready
            if kind == probes.STARTUP and _api_ready(self.pod, c.get("name", ""), cur.id):
                state.result = probes.SUCCESS
            self.probe_states[key] = state
            self.probe_tasks[key] = asyncio.create_task(self._probe_loop(c, cur, state))

    async def _probe_loop(self, c: dict[str, Any], cur: CRIContainer, state: probes.ProbeState) -> None:
        spec = state.spec
        name = c.get("name", "")
        ports = {p["name"]: int(p["containerPort"]) for p in c.get("ports") or [] if p.get("name")}
        started = cur.started_at / 1e9 if cur.started_at else time.time()
        await asyncio.sleep(max(0.0, started + spec.initial_delay - time.time()))
        while True:
            if spec.kind != probes.STARTUP and c.get("startupProbe"):
                st = self.probe_states.get((cur.id, probes.STARTUP))
                if st is None or st.result != probes.SUCCESS:
                    await asyncio.sleep(min(spec.period, 0.5))
                    continue
            if spec.kind == probes.STARTUP and state.result == probes.SUCCESS:
                return
            target = probes.ProbeTarget((self.sandbox_ip or ["127.0.0.1"])[0], cur.id, ports,
                                        self.agent.cri.exec_sync)
            ok, out = await probes.run_probe(spec, target)
            changed = state.observe(ok, out)
            if not ok:
                kind = spec.kind.capitalize()
                self.event("Warning", "Unhealthy", f"{kind} probe failed: {out.strip()[:300]}", name)
            if changed:
                self.kick()
                if spec.kind == probes.LIVENESS and state.result == probes.FAILURE:
                    return
            await asyncio.sleep(spec.period)

    def _stop_probes(self, cid: str | None = None) -> None:
        for key in [k for k in self.probe_tasks if cid is None or k[0] == cid]:
            self.probe_tasks.pop(key).cancel()
            self.probe_states.pop(key, None)

    # ------------------------------------------------------------------ hooks and killing

    def _hook_target(self, c: dict[str, Any] | None, cid: str) -> probes.ProbeTarget:
        ports = {p["name"]: int(p["containerPort"]) for p in (c or {}).get("ports") or [] if p.get("name")}
        return probes.ProbeTarget((self.sandbox_ip or ["127.0.0.1"])[0], cid, ports, self.agent.cri.exec_sync)

    async def _post_start(self, c: dict[str, Any], cid: str, name: str, kind: str) -> bool:
        """Run the postStart hook; on failure kill the container (its restart policy decides what next).

        Like the kubelet, the worker waits for the hook: until it returns the container is not
        reported started, so nothing (probes, the next init container) runs beside it.
        """
        hook = (c.get("lifecycle") or {}).get("postStart") or {}
        if not hook:
            return True
        if "sleep" in hook:
            await asyncio.sleep(float(hook["sleep"].get("seconds", 0)))
            return True
        spec = probes.ProbeSpec("poststart", hook, timeout=POST_START_TIMEOUT)
        ok, out = await probes.run_probe(spec, self._hook_target(c, cid))
        if ok:
            return True
        what = (f"Exec lifecycle hook ({hook['exec'].get('command')})" if "exec" in hook else
                f"HTTP lifecycle hook ({(hook.get('httpGet') or {}).get('path') or '/'})")
        self.event("Warning", "FailedPostStartHook",
                   f'{what} for Container "{name}" in Pod "{self.key}" failed - error: {out[:300]}', name, kind)
        await self._kill(cid, name, self.grace_period(), "FailedPostStartHook", c)
        return False


    async def _pre_stop(self, c: dict[str, Any] | None, cid: str, grace: float) -> None:
        hook = ((c or {}).get("lifecycle") or {}).get("preStop") or {}
        if not hook:
            return
        spec = probes.ProbeSpec("prestop", hook, timeout=max(grace, 1))
        target = self._hook_target(c, cid)
        if "sleep" in hook:
            await asyncio.sleep(min(grace, float(hook["sleep"].get("seconds", 0))))
            return
        with contextlib.suppress(Exception):
            ok, out = await asyncio.wait_for(probes.run_probe(spec, target), grace)
            if not ok:
                self.event("Warning", "FailedPreStopHook", f"PreStopHook failed: {out[:200]}",
                           (c or {}).get("name", ""))

    async def _kill(self, cid: str, name: str, grace: int, reason: str, c: dict[str, Any] | None,
                    kind: str = REGULAR) -> None:
        self._stop_probes(cid)
        self.event("Normal", "Killing", reason if reason.startswith("Container") else
                   f"Stopping container {name}", name, kind)
        t0 = time.monotonic()
        await self._pre_stop(c, cid, grace)
        left = max(0, int(round(grace - (time.monotonic() - t0))))
        try:
            await self.agent.cri.stop_container(cid, left)
        except Exception as e:
            if not cric.is_not_found(e):
                log.warning("stop container %s of %s: %s", cid[:12], self.key, e)

    def evict(self, message: str, grace: int = 0) -> None:
        """Node-pressure eviction (eviction.py): Failed/Evicted, killed by the next sync with
        `grace` seconds to stop (0 for hard thresholds)."""
        self.terminal = ("Failed", "Evicted", message)
        self.terminal_grace = grace
        self.event("Warning", "Evicted", message)
        self.kick()

    async def kill_all(self, reason: str, grace: int, stop_sandbox: bool) -> None:
        sandboxes, containers = self._runtime_state()
        specs = {c.get("name"): c for c in (self.pod.get("spec") or {}).get("containers") or []}
        running = [c for c in containers if cric.container_state(c) in ("running", "created")]
        await asyncio.gather(*(self._kill(c.id, c.labels.get(L.CONTAINER_NAME, ""), grace, reason,
                                          specs.get(c.labels.get(L.CONTAINER_NAME, "")),
                                          _kind(c.labels.get(L.CONTAINER_KIND, REGULAR)))
                               for c in running))
        self._stop_probes()
        if stop_sandbox:
            for s in sandboxes:
                if s.state == cric.pb.SANDBOX_READY:
                    try:
                        await self.agent.cri.stop_pod_sandbox(s.id)
                    except Exception as e:
                        if not cric.is_not_found(e):
                            raise
        if running or stop_sandbox:
            await self.agent.pleg.relist_now()

    async def terminate(self) -> None:
        """Deletion: preStop, SIGTERM, grace, SIGKILL; then remove everything and tell the API."""
        grace = self.grace_period()
        if self.removed and grace > 2:
            grace = 2  # force-deleted or gone: no one waits for a graceful end
        await self.kill_all(reason="pod deleted", grace=grace, stop_sandbox=True)
        await self.cleanup_runtime()
        await asyncio.to_thread(qos.remove_pod_cgroup, qos.pod_cgroup_parent(self.pod, self.agent.cfg.cgroup_root))
        await asyncio.to_thread(self.agent.volumes.teardown, self.uid)
        self.agent.backoff.forget_pod(self.uid)
        if not self.removed and not self.static:
            await self.agent.finish_delete(self.pod)
        self.done = True

    async def cleanup_runtime(self) -> None:
        sandboxes, containers = self._runtime_state()
        for c in containers:
            with contextlib.suppress(Exception):
                await self.agent.cri.remove_container(c.id)
        for s in sandboxes:
            try:
                await self.agent.cri.remove_pod_sandbox(s.id)
            except Exception as e:
                if not cric.is_not_found(e):
                    log.warning("remove sandbox %s of %s: %s", s.id[:12], self.key, e)
        await self.agent.pleg.relist_now()

    # ------------------------------------------------------------------ status

    async def report_current(self) -> None:
        """Status from what the runtime holds, without starting anything."""
        spec = self.pod.get("spec") or {}
        _, containers = self._runtime_state()
        init_views, views = [], []
        for kind, specs, out in ((INIT, spec.get("initContainers") or [], init_views),
                                 (REGULAR, spec.get("containers") or [], views)):
            for c in specs:
                name = c.get("name", "")
                inst = await self._instances(name, kind, containers)
                v = ContainerView(name, c.get("image", ""), inst[0] if inst else None,
                                  inst[1] if len(inst) > 1 else None, inst[0].restart_count if inst else 0)
                if v.current is None:
                    v.waiting_reason, v.waiting_message = self.waiting.get(name, (self._default_waiting(), ""))
                out.append(v)
        eph_views = [await self._ephemeral_view(c, containers) for c in spec.get("ephemeralContainers") or []]
        await self.push_status(init_views, views, terminal=self.terminal, ephemeral_views=eph_views)

    async def push_status(self, init_views: list[ContainerView], views: list[ContainerView],
                          terminal: tuple[str, str, str] | None = None,
                          ephemeral_views: list[ContainerView] | None = None) -> None:
        for v in views:
            if v.current is None and not v.waiting_reason and v.name in self.waiting:
                v.waiting_reason, v.waiting_message = self.waiting[v.name]
        ips = [] if terminal and self.rejected else self.sandbox_ip
        status = build_status(self.pod, init_views, views, pod_ips=ips, host_ip=self.agent.node_ip,
                              start_time=self.start_time, terminal=terminal, ephemeral_views=ephemeral_views)
        await self.agent.status.set(self, status)
