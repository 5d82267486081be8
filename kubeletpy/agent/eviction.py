"""Node-pressure eviction: when memory, the node filesystem (space or inodes) or PIDs run
short, get them back, as the kubelet's eviction manager does.

Why: on a shared node one noisy neighbour (a pod filling its emptyDir, leaking memory,
forking) would otherwise starve every other pod and the node's own daemons. Every
`interval` seconds the manager measures each signal and compares it with two sets of
thresholds in the kubelet's syntax:

* hard (`--eviction-hard memory.available<100Mi,nodefs.available<10%,...`): acted on at
  once, the victim killed without a grace period;
* soft (`--eviction-soft` with `--eviction-soft-grace-period memory.available=1m30s`):
  acted on only after the signal stayed below the threshold for its grace period, the
  victim given min(its terminationGracePeriodSeconds, `--eviction-max-pod-grace-period`).

A threshold that is crossed (hard or soft, grace period or not) sets the node's pressure
condition, which stays until nothing has crossed for `--eviction-pressure-transition-period`
(so a node does not flap between admitting and refusing pods). Before ending any pod the
node reclaims what it can itself: for the node filesystem, dead containers and unused
images (when images share that filesystem); only if that was not enough is one pod
evicted per pass -- phase Failed, reason Evicted, its volumes removed -- chosen in the
kubelet's order: pods using more than they requested of the starved resource, then lower
priority, then the larger use (for PIDs: priority, then process count). Critical pods
(static pods and priority >= system-critical) are never evicted.

Independently of node pressure, every pass also enforces local ephemeral storage limits, as
the kubelet's LocalStorageCapacityIsolation does: a pod whose emptyDir outgrows its
`sizeLimit`, whose containers' writable layers, logs and emptyDirs together outgrow the sum of
their `ephemeral-storage` limits, or whose container outgrows its own limit, is evicted at once.

`nodefs` is the filesystem of the agent's root dir, where emptyDir volumes and pod logs live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeletpy.agent import labels as L
from kubeletpy.agent import qos, staticpods
from kubeletpy.agent.quantity import value as parse_memory

if TYPE_CHECKING:
    from kubeletpy.agent.agent import Agent

log = logging.getLogger("kubeletpy.agent.eviction")

SIGNALS = ("memory.available", "nodefs.available", "nodefs.inodesFree", "pid.available")
RESOURCE = {"memory.available": "memory", "nodefs.available": "ephemeral-storage",
            "nodefs.inodesFree": "inodes", "pid.available": "pids"}
CONDITION = {"memory.available": "MemoryPressure", "nodefs.available": "DiskPressure",
             "nodefs.inodesFree": "DiskPressure", "pid.available": "PIDPressure"}
COUNTED = ("nodefs.inodesFree", "pid.available")  # thresholds are counts, not bytes
DEFAULT_HARD = "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,pid.available<10%"
SYSTEM_CRITICAL_PRIORITY = 2_000_000_000  # scheduling.SystemCriticalPriority


class ThresholdError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    signal: str
    quantity: int = 0        # bytes (memory, nodefs) or a count (inodes, pids), if given absolutely
    fraction: float = 0.0    # or a share of the capacity
    grace: float = 0.0       # soft thresholds: how long it must stay crossed before pods are evicted
    hard: bool = True

    def minimum(self, capacity: int) -> float:
        return self.quantity if not self.fraction else self.fraction * capacity

    def text(self) -> str:
        if self.fraction:
            return f"{self.fraction * 100:g}%"
        return str(self.quantity) if self.signal in COUNTED else _bytes(self.quantity)


def parse_thresholds(text: str, flag: str = "--eviction-hard") -> dict[str, Threshold]:
    """`memory.available<100Mi,nodefs.available<10%` -> {signal: Threshold}; errors name the bad part."""
    out: dict[str, Threshold] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        signal, op, value = part.partition("<")
        signal, value = signal.strip(), value.strip()
        if not op or signal not in SIGNALS:
            raise ThresholdError(f"{flag}: {part!r}: want <signal><<quantity|percent>, signal one of "
                                 f"{', '.join(SIGNALS)}")
        hard = flag == "--eviction-hard"
        try:
            if value.endswith("%"):
                frac = float(value[:-1]) / 100
                if not 0 <= frac <= 1:
                    raise ValueError
                out[signal] = Threshold(signal, fraction=frac, hard=hard)
            elif signal in COUNTED:
                out[signal] = Threshold(signal, quantity=int(value), hard=hard)
            else:
                out[signal] = Threshold(signal, quantity=parse_memory(value), hard=hard)
        except ValueError:
            raise ThresholdError(f"{flag}: {part!r}: bad quantity {value!r}") from None
    return out


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration ("1m30s", "90s", "0"), in seconds: the kubelet's flags use it."""
    t = text.strip()
    if t == "0":
        return 0.0
    if not t:
        raise ValueError("invalid duration ''")
    pos, total = 0, 0.0
    while pos < len(t):
        m = _DURATION.match(t, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    return total


def parse_soft(text: str, grace_text: str) -> dict[str, Threshold]:
    """`--eviction-soft` plus `--eviction-soft-grace-period memory.available=1m30s,...`: every
    soft threshold needs a grace period, and every grace period a soft threshold (as the kubelet)."""
    soft = parse_thresholds(text, "--eviction-soft")
    graces: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in grace_text.split(","))):
        signal, eq, value = part.partition("=")
        signal = signal.strip()
        if not eq or signal not in SIGNALS:
            raise ThresholdError(f"--eviction-soft-grace-period: {part!r}: want <signal>=<duration>, signal one "
                                 f"of {', '.join(SIGNALS)}")
        try:
            graces[signal] = parse_duration(value)
        except ValueError:
            raise ThresholdError(f"--eviction-soft-grace-period: {part!r}: bad duration {value.strip()!r} "
                                 "(e.g. 90s, 1m30s)") from None
        if graces[signal] < 0:
            raise ThresholdError(f"--eviction-soft-grace-period: {part!r}: must not be negative")
    for signal in soft:
        if signal not in graces:
            raise ThresholdError(f"--eviction-soft: grace period must be specified for the soft eviction "
                                 f"threshold {signal} (--eviction-soft-grace-period {signal}=<duration>)")
    for signal in graces:
        if signal not in soft:
            raise ThresholdError(f"--eviction-soft-grace-period: {signal} has no --eviction-soft threshold")
    return {s: Threshold(s, th.quantity, th.fraction, grace=graces[s], hard=False) for s, th in soft.items()}


def _bytes(n: float) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.0f}{unit}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class Observation:
    signal: str
    available: float
    capacity: float


def observe(root_dir: Path) -> dict[str, Observation]:
    from kubeletpy.agent.node import meminfo, pid_usage  # node.py imports us

    mi = meminfo()
    root_dir.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(root_dir)
    running, pid_max = pid_usage()
    return {
        "memory.available": Observation("memory.available", mi.get("MemAvailable", 0), mi.get("MemTotal", 0)),
        "nodefs.available": Observation("nodefs.available", st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize),
        "nodefs.inodesFree": Observation("nodefs.inodesFree", st.f_favail, st.f_files),
        "pid.available": Observation("pid.available", pid_max - running, pid_max),
    }


def crossed(obs: dict[str, Observation], thresholds: dict[str, Threshold]) -> list[str]:
    """The signals below their threshold, in the kubelet's order of concern."""
    return [s for s in SIGNALS if s in thresholds and s in obs and obs[s].capacity > 0
            and obs[s].available < thresholds[s].minimum(int(obs[s].capacity))]


def is_critical(pod: dict[str, Any]) -> bool:
    """Never evicted, always admitted: static pods and system-critical priorities."""
    return staticpods.is_static(pod) or priority(pod) >= SYSTEM_CRITICAL_PRIORITY


def priority(pod: dict[str, Any]) -> int:
    try:
        return int((pod.get("spec") or {}).get("priority") or 0)
    except (TypeError, ValueError):
        return 0


@dataclass
class Candidate:
    pod: dict[str, Any]
    usage: int        # of the starved resource (bytes, inodes or processes)
    request: int      # what the pod asked for of it


def rank(cands: list[Candidate], signal: str = "memory.available") -> list[Candidate]:
    """Victims first, in the kubelet's order. Memory and disk: usage above request, then lower
    priority, then the most used relative to what was requested -- a BestEffort pod requested
    nothing, so any use puts it in the first group; a Guaranteed pod within its request comes
    last. PIDs cannot be requested: lower priority, then more processes."""
    if signal == "pid.available":
        return sorted(cands, key=lambda c: (priority(c.pod), -c.usage))
    return sorted(cands, key=lambda c: (not c.usage > c.request, priority(c.pod), -(c.usage - c.request)))


def requests(pod: dict[str, Any], signal: str) -> int:
    if signal == "memory.available":
        return qos.pod_requests(pod)[1]
    if signal == "nodefs.available":
        total = 0
        for c in (pod.get("spec") or {}).get("containers") or []:
            v = ((c.get("resources") or {}).get("requests") or {}).get("ephemeral-storage")
            if v is not None:
                total += parse_memory(str(v))
        return total
    return 0


def _walk_one_fs(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(directory, its files, the filesystem's device) for every directory under `path` that is
    on path's own filesystem (mounts below it are someone else's)."""
    try:
        dev = path.stat().st_dev
    except OSError:
        return
    for root, dirs, files in os.walk(path):
        yield root, files, dev
        dirs[:] = [d for d in dirs if _same_dev(os.path.join(root, d), dev)]


def dir_usage(path: Path) -> int:
    """Bytes under `path` (not following symlinks, not crossing into other filesystems)."""
    total = 0
    for root, files, dev in _walk_one_fs(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_dev == dev:
                total += st.st_blocks * 512
    return total


def _same_dev(path: str, dev: int) -> bool:
    try:
        return os.lstat(path).st_dev == dev
    except OSError:
        return False


def message(signal: str, th: Threshold, obs: Observation, cand: Candidate) -> str:
    """The kubelet's wording, so tooling that greps for it keeps working."""
    res = RESOURCE[signal]
    unit = str if signal in COUNTED else _bytes
    return (f"The node was low on resource: {res}. Threshold quantity: {th.text()}, available: "
            f"{unit(obs.available)}. Pod was using {unit(cand.usage)}, request is {unit(cand.request)}. ")


def dir_inodes(path: Path) -> int:
    """Inodes under `path` on its own filesystem (files and directories)."""
    return sum(1 + len(files) for _root, files, _dev in _walk_one_fs(path))


def pod_processes(pod: dict[str, Any], cgroup_root: str, fs: str = qos.CGROUP_FS) -> int:
    """Processes in the pod's cgroup: the pids controller's count (v1 or v2), or else the
    processes of every cgroup below the pod's (the unified tree on v2, memory on v1)."""
    rel = qos.pod_cgroup_parent(pod, cgroup_root).strip("/")
    for base in (os.path.join(fs, "pids"), fs):
        try:
            with open(os.path.join(base, rel, "pids.current")) as f:
                return int(f.read())
        except (OSError, ValueError):
            continue
    total = 0
    unified = os.path.exists(os.path.join(fs, "cgroup.controllers"))
    for root, _dirs, files in os.walk(os.path.join(fs, rel) if unified else os.path.join(fs, "memory", rel)):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(root, "cgroup.procs")) as f:
                    total += sum(1 for line in f if line.strip())
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------- the manager

@dataclass
class Decision:
    """One pass's verdict: the conditions to report and, if any, the threshold to act on."""
    conditions: set[str]
    act_on: Threshold | None = None


@dataclass
class Manager:
    """The state between passes: since when each threshold has been crossed (for soft grace
    periods) and when each condition was last observed (for the transition period)."""
    hard: dict[str, Threshold]
    soft: dict[str, Threshold] = field(default_factory=dict)
    transition: float = 300.0
    first_crossed: dict[tuple[str, bool], float] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    def decide(self, obs: dict[str, Observation], now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        met = [self.hard[s] for s in crossed(obs, self.hard)] + [self.soft[s] for s in crossed(obs, self.soft)]
        keys = {(t.signal, t.hard) for t in met}
        self.first_crossed = {k: v for k, v in self.first_crossed.items() if k in keys}
        for t in met:
            self.first_crossed.setdefault((t.signal, t.hard), now)
            self.last_seen[CONDITION[t.signal]] = now
        conditions = {c for c, seen in self.last_seen.items() if seen == now or now - seen < self.transition}
        actionable = [t for t in met if t.hard or now - self.first_crossed[(t.signal, False)] >= t.grace]
        # the kubelet's order of concern: memory, then disk, then PIDs; hard before soft
        actionable.sort(key=lambda t: (SIGNALS.index(t.signal), not t.hard))
        return Decision(conditions, actionable[0] if actionable else None)

    def still_crossed(self, th: Threshold, obs: dict[str, Observation]) -> bool:
        return bool(crossed(obs, {th.signal: th}))


def victim_grace(pod: dict[str, Any], th: Threshold, max_pod_grace: int) -> int:
    """Hard thresholds: no grace. Soft: the pod's own, capped by --eviction-max-pod-grace-period
    (0 leaves the pod's own)."""
    if th.hard:
        return 0
    own = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    own = 30 if own is None else int(own)
    return min(own, max_pod_grace) if max_pod_grace > 0 else own


# ---------------------------------------------------------------------------------- the loop

async def run(agent: Agent) -> None:
    mgr = Manager(agent.cfg.eviction_hard, agent.cfg.eviction_soft, agent.cfg.eviction_pressure_transition)
    while True:
        try:
            await evict_once(agent, mgr)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - measure again next time
            log.exception("eviction pass failed")
        await asyncio.sleep(agent.cfg.eviction_interval)


async def evict_once(agent: Agent, mgr: Manager) -> str | None:
    """Enforce storage limits; measure; past a threshold, reclaim node-level resources, then
    evict the first-ranked pod if that was not enough. Returns the (last) evicted pod's key."""
    over_limit = await local_storage_eviction(agent)
    obs = await asyncio.to_thread(observe, agent.cfg.root_dir)
    decision = mgr.decide(obs)
    agent.pressure = agent.node.pressure = decision.conditions
    th = decision.act_on
    if th is None:
        return over_limit
    workers = [w for w in agent.workers.values() if not w.done and w.rejected is None]
    if any(w.terminal is not None and w.terminal[1] == "Evicted" and agent.pleg.snapshot.containers.get(w.uid)
           and any(c.state == 1 for c in agent.pleg.snapshot.containers[w.uid]) for w in workers):
        return None  # the last victim is still going: wait for what it frees (kubelet: one at a time)
    if th.signal.startswith("nodefs.") and await reclaim_node_fs(agent):
        obs = await asyncio.to_thread(observe, agent.cfg.root_dir)
        if not mgr.still_crossed(th, obs):
            log.info("eviction: %s recovered by removing dead containers and unused images", th.signal)
            return None
    live = [w for w in workers if w.terminal is None and not w._deleting() and not is_critical(w.pod)
            and (w.pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if not live:
        return None
    usage = await _usage(agent, th.signal, live)
    cands = rank([Candidate(w.pod, usage.get(w.uid, 0), requests(w.pod, th.signal)) for w in live], th.signal)
    victim = cands[0]
    uid = (victim.pod.get("metadata") or {}).get("uid", "")
    msg = message(th.signal, th, obs[th.signal], victim)
    grace = victim_grace(victim.pod, th, agent.cfg.eviction_max_pod_grace)
    log.warning("eviction: %s below its %s threshold; evicting %s (grace %ds): %s", th.signal,
                "hard" if th.hard else "soft", agent.workers[uid].key, grace, msg)
    agent.workers[uid].evict(msg, grace)
    return agent.workers[uid].key


async def reclaim_node_fs(agent: Agent) -> bool:
    """The kubelet frees node-level disk before ending pods: dead containers always, unused
    images when the runtime keeps them on the same filesystem as the agent's root. True if
    anything was removed."""
    from kubeletpy.agent import gc

    root_dev = os.stat(agent.cfg.root_dir).st_dev
    try:
        image_devs = {os.stat(f.fs_id.mountpoint).st_dev for f in await agent.cri.image_fs_info()}
    except Exception:  # noqa: BLE001 - an unreadable image fs is not one we share
        image_devs = set()
    containers, images = await gc.collect(agent, force_images=root_dev in image_devs)
    return bool(containers or images)


async def _usage(agent: Agent, signal: str, live: list[Any]) -> dict[str, int]:
    """Per pod uid: bytes of memory (CRI stats: working set), bytes or inodes of disk (volumes +
    logs), or processes (the pod's cgroup)."""
    out: dict[str, int] = {}
    if signal == "memory.available":
        for s in await agent.cri.list_container_stats({L.MANAGED: "true"}):
            uid = s.attributes.labels.get(L.POD_UID, "")
            out[uid] = out.get(uid, 0) + int(s.memory.working_set_bytes.value)
        return out

    def pod_dirs(w: Any) -> list[Path]:
        meta = w.pod["metadata"]
        return [agent.volumes.pod_dir(w.uid),
                Path(agent.cfg.pod_log_dir) / f"{meta.get('namespace')}_{meta.get('name')}_{w.uid}"]

    def measure() -> dict[str, int]:
        if signal == "pid.available":
            return {w.uid: pod_processes(w.pod, agent.cfg.cgroup_root) for w in live}
        count = dir_inodes if signal == "nodefs.inodesFree" else dir_usage
        return {w.uid: sum(count(d) for d in pod_dirs(w)) for w in live}

    return await asyncio.to_thread(measure)


# ---------------------------------------------------------------------------------- storage limits

def _binary(n: int) -> str:
    """Go's canonical BinarySI quantity text (what the kubelet prints for a summed limit)."""
    for unit, size in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _has_storage_limits(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any(parse_memory(str((v.get("emptyDir") or {}).get("sizeLimit") or 0)) > 0
               for v in spec.get("volumes") or []) or any(
        ((c.get("resources") or {}).get("limits") or {}).get("ephemeral-storage") for c in spec.get("containers") or [])


def storage_limit_violation(pod: dict[str, Any], empty_dirs: dict[str, int], containers: dict[str, int]) -> str | None:
    """The kubelet's message for the first limit the pod is over, in its order (emptyDir, pod,
    container); None if within all. `empty_dirs`: bytes per emptyDir volume on disk;
    `containers`: writable layer + logs per container name."""
    spec = pod.get("spec") or {}
    for v in spec.get("volumes") or []:
        limit = (v.get("emptyDir") or {}).get("sizeLimit")
        if limit and parse_memory(str(limit)) > 0 and empty_dirs.get(v.get("name", ""), 0) > parse_memory(str(limit)):
            return f'Usage of EmptyDir volume "{v.get("name")}" exceeds the limit "{limit}". '
    limits = [(c.get("name", ""), ((c.get("resources") or {}).get("limits") or {}).get("ephemeral-storage"))
              for c in spec.get("containers") or []]
    limits = [(n, str(q)) for n, q in limits if q is not None]
    if not limits:
        return None
    total = sum(parse_memory(q) for _, q in limits)
    local_dirs = {v.get("name") for v in spec.get("volumes") or []
                  if "emptyDir" in v and (v.get("emptyDir") or {}).get("medium") != "Memory"}
    used = sum(containers.values()) + sum(b for n, b in empty_dirs.items() if n in local_dirs)
    if used > total:
        shown = limits[0][1] if len(limits) == 1 else _binary(total)
        return f"Pod ephemeral local storage usage exceeds the total limit of containers {shown}. "
    for name, q in limits:
        if containers.get(name, 0) > parse_memory(q):
            return f'Container {name} exceeded its local ephemeral storage limit "{q}". '
    return None


async def local_storage_eviction(agent: Agent) -> str | None:
    """Evict (at once) every pod over one of its ephemeral storage limits; only pods that set
    limits are measured. Returns the last evicted pod's key."""
    from kubeletpy.agent.podconfig import log_directory

    limited = [w for w in agent.workers.values() if not w.done and w.rejected is None and w.terminal is None
               and not w._deleting() and not is_critical(w.pod) and _has_storage_limits(w.pod)
               and (w.pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if not limited:
        return None
    uids = {w.uid for w in limited}
    # running instances only, as the kubelet: a runtime may list stats of exited ones too
    running = {c.id for uid in uids for c in agent.pleg.snapshot.containers.get(uid, []) if c.state == 1}
    layers: dict[tuple[str, str], int] = {}
    for st in await agent.cri.list_container_stats({L.MANAGED: "true"}):
        labels = st.attributes.labels
        if labels.get(L.POD_UID) in uids and st.attributes.id in running and st.HasField("writable_layer"):
            key = (labels.get(L.POD_UID, ""), labels.get(L.CONTAINER_NAME, ""))
            layers[key] = layers.get(key, 0) + int(st.writable_layer.used_bytes.value)

    def measure(w: Any) -> tuple[dict[str, int], dict[str, int]]:
        vols = agent.volumes.pod_dir(w.uid) / "volumes" / "kubernetes.io~empty-dir"
        empty = {v.get("name", ""): dir_usage(vols / v.get("name", "")) for v in (w.pod.get("spec") or {}).get(
                 "volumes") or [] if "emptyDir" in v}
        logs = Path(log_directory(Path(agent.cfg.pod_log_dir), w.pod))
        ctrs = {c.get("name", ""): layers.get((w.uid, c.get("name", "")), 0) + dir_usage(logs / c.get("name", ""))
                for c in (w.pod.get("spec") or {}).get("containers") or []}
        return empty, ctrs

    evicted = None
    for w in limited:
        empty, ctrs = await asyncio.to_thread(measure, w)
        msg = storage_limit_violation(w.pod, empty, ctrs)
        if msg:
            log.warning("eviction: %s is over its ephemeral storage limit: %s", w.key, msg)
            w.evict(msg, 0)
            evicted = w.key
    return evicted
