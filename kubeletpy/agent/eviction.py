"""Node-pressure eviction: when memory, the node filesystem or PIDs run short, end pods to
get them back, as the kubelet's eviction manager does (hard thresholds only).

Why: on a shared node one noisy neighbour (a pod filling its emptyDir, leaking memory,
forking) would otherwise starve every other pod and the node's own daemons. The agent
measures each signal every `interval` seconds; while one is below its threshold the node
reports the pressure condition, and one pod at a time is evicted: phase Failed, reason
Evicted, killed at once (grace 0, as for the kubelet's hard thresholds), its volumes
removed. The victim is chosen like the kubelet's ranking: pods using more than they
requested of the starved resource first, then by how far usage exceeds the request
(priority classes are not modelled; static pods are never evicted).

Thresholds use the kubelet's `--eviction-hard` syntax: `memory.available<100Mi,
nodefs.available<10%,pid.available<10%` (the defaults). `nodefs` is the filesystem of the
agent's root dir, where emptyDir volumes live; images have their own garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeletpy.agent import labels as L
from kubeletpy.agent import qos, staticpods
from kubeletpy.agent.quantity import value as parse_memory

if TYPE_CHECKING:
    from kubeletpy.agent.agent import Agent

log = logging.getLogger("kubeletpy.agent.eviction")

SIGNALS = ("memory.available", "nodefs.available", "pid.available")
RESOURCE = {"memory.available": "memory", "nodefs.available": "ephemeral-storage", "pid.available": "pids"}
CONDITION = {"memory.available": "MemoryPressure", "nodefs.available": "DiskPressure",
             "pid.available": "PIDPressure"}
DEFAULT_HARD = "memory.available<100Mi,nodefs.available<10%,pid.available<10%"


class ThresholdError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    signal: str
    quantity: int = 0        # bytes (memory, nodefs) or a count (pids), if given absolutely
    fraction: float = 0.0    # or a share of the capacity

    def minimum(self, capacity: int) -> float:
        return self.quantity if not self.fraction else self.fraction * capacity

    def text(self) -> str:
        if self.fraction:
            return f"{self.fraction * 100:g}%"
        return str(self.quantity) if self.signal == "pid.available" else _bytes(self.quantity)


def parse_thresholds(text: str) -> dict[str, Threshold]:
    """`memory.available<100Mi,nodefs.available<10%` -> {signal: Threshold}; errors name the bad part."""
    out: dict[str, Threshold] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        signal, op, value = part.partition("<")
        signal, value = signal.strip(), value.strip()
        if not op or signal not in SIGNALS:
            raise ThresholdError(f"--eviction-hard: {part!r}: want <signal><<quantity|percent>, signal one of "
                                 f"{', '.join(SIGNALS)}")
        try:
            if value.endswith("%"):
                frac = float(value[:-1]) / 100
                if not 0 <= frac <= 1:
                    raise ValueError
                out[signal] = Threshold(signal, fraction=frac)
            elif signal == "pid.available":
                out[signal] = Threshold(signal, quantity=int(value))
            else:
                out[signal] = Threshold(signal, quantity=parse_memory(value))
        except ValueError:
            raise ThresholdError(f"--eviction-hard: {part!r}: bad quantity {value!r}") from None
    return out


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
    from kubeletpy.agent.node import fs_usage, meminfo, pid_usage  # node.py imports us

    mi = meminfo()
    cap, avail = fs_usage(root_dir)
    running, pid_max = pid_usage()
    return {
        "memory.available": Observation("memory.available", mi.get("MemAvailable", 0), mi.get("MemTotal", 0)),
        "nodefs.available": Observation("nodefs.available", avail, cap),
        "pid.available": Observation("pid.available", pid_max - running, pid_max),
    }


def under_pressure(obs: dict[str, Observation], thresholds: dict[str, Threshold]) -> list[str]:
    """The signals below their threshold, in the kubelet's order of concern."""
    return [s for s in SIGNALS if s in thresholds and s in obs and obs[s].capacity > 0
            and obs[s].available < thresholds[s].minimum(int(obs[s].capacity))]


@dataclass
class Candidate:
    pod: dict[str, Any]
    usage: int        # of the starved resource
    request: int      # what the pod asked for of it


def rank(cands: list[Candidate]) -> list[Candidate]:
    """Victims first, in the kubelet's order: usage above request, then (priority, not modelled)
    the most used relative to what was requested. A BestEffort pod requested nothing, so any
    use puts it in the first group; a Guaranteed pod within its request comes last."""
    return sorted(cands, key=lambda c: (not c.usage > c.request, -(c.usage - c.request)))


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


def dir_usage(path: Path) -> int:
    """Bytes under `path` (not following symlinks, not crossing into other filesystems)."""
    total = 0
    try:
        dev = path.stat().st_dev
    except OSError:
        return 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_dev == dev:
                total += st.st_blocks * 512
        dirs[:] = [d for d in dirs if _same_dev(os.path.join(root, d), dev)]
    return total


def _same_dev(path: str, dev: int) -> bool:
    try:
        return os.lstat(path).st_dev == dev
    except OSError:
        return False


def message(signal: str, th: Threshold, obs: Observation, cand: Candidate) -> str:
    """The kubelet's wording, so tooling that greps for it keeps working."""
    res = RESOURCE[signal]
    unit = str if signal == "pid.available" else _bytes
    return (f"The node was low on resource: {res}. Threshold quantity: {th.text()}, available: "
            f"{unit(obs.available)}. Pod was using {unit(cand.usage)}, request is {unit(cand.request)}. ")


# ---------------------------------------------------------------------------------- the loop

async def run(agent: Agent) -> None:
    while True:
        await asyncio.sleep(agent.cfg.eviction_interval)
        try:
            await evict_once(agent)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - measure again next time
            log.exception("eviction pass failed")


async def evict_once(agent: Agent) -> str | None:
    """Measure; under pressure, evict the first-ranked pod. Returns the evicted pod's key."""
    obs = await asyncio.to_thread(observe, agent.cfg.root_dir)
    starved = under_pressure(obs, agent.cfg.eviction_hard)
    agent.pressure = {CONDITION[s] for s in starved}
    if not starved:
        return None
    workers = [w for w in agent.workers.values() if not w.done and w.rejected is None]
    if any(w.terminal is not None and w.terminal[1] == "Evicted" and agent.pleg.snapshot.containers.get(w.uid)
           and any(c.state == 1 for c in agent.pleg.snapshot.containers[w.uid]) for w in workers):
        return None  # the last victim is still going: wait for what it frees (kubelet: one at a time)
    live = [w for w in workers if w.terminal is None and not w._deleting() and not staticpods.is_static(w.pod)
            and (w.pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if not live:
        return None
    signal = starved[0]
    usage = await _usage(agent, signal, live)
    cands = rank([Candidate(w.pod, usage.get(w.uid, 0), requests(w.pod, signal)) for w in live])
    victim = cands[0]
    uid = (victim.pod.get("metadata") or {}).get("uid", "")
    msg = message(signal, agent.cfg.eviction_hard[signal], obs[signal], victim)
    log.warning("eviction: %s below threshold; evicting %s: %s", signal, agent.workers[uid].key, msg)
    agent.workers[uid].evict(msg)
    return agent.workers[uid].key


async def _usage(agent: Agent, signal: str, live: list[Any]) -> dict[str, int]:
    """Per pod uid: bytes of memory (CRI stats: working set) or of disk (volumes + logs)."""
    out: dict[str, int] = {}
    if signal == "memory.available":
        for s in await agent.cri.list_container_stats({L.MANAGED: "true"}):
            uid = s.attributes.labels.get(L.POD_UID, "")
            out[uid] = out.get(uid, 0) + int(s.memory.working_set_bytes.value)
    elif signal == "nodefs.available":
        def measure() -> dict[str, int]:
            return {w.uid: dir_usage(agent.volumes.pod_dir(w.uid)) + dir_usage(Path(agent.cfg.pod_log_dir) /
                    f"{w.pod['metadata'].get('namespace')}_{w.pod['metadata'].get('name')}_{w.uid}")
                    for w in live}
        out = await asyncio.to_thread(measure)
    return out
