"""CRI state -> PodStatus, and the minimal merge patch that takes the API there.

Pure functions: the worker gathers what the runtime says (`ContainerView` per container)
and what the probes say; this module turns that into phase, conditions and container
statuses with the kubelet's rules, and `merge_diff` computes the RFC 7386 patch against
what the API holds so the agent PATCHes pods/status only when something changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from kubeletpy.agent.qos import qos_class

RUNTIME_PREFIX = "kubeletpy://"  # containerID scheme: the runtime's name (Version), set by set_runtime_name


def set_runtime_name(name: str) -> None:
    """containerID is `<runtime>://<id>` like the kubelet writes it (e.g. containerd://...)."""
    global RUNTIME_PREFIX
    if name:
        RUNTIME_PREFIX = f"{name}://"
CREATED, RUNNING, EXITED, UNKNOWN = "created", "running", "exited", "unknown"


def rfc3339(ns_or_s: float | int | None, *, seconds: bool = False) -> str | None:
    """CRI timestamps are nanoseconds since the epoch; the API wants RFC 3339 seconds."""
    if not ns_or_s:
        return None
    t = float(ns_or_s) if seconds else ns_or_s / 1e9
    return dt.datetime.fromtimestamp(int(t), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class CRIContainer:
    """What CRI ContainerStatus said about one container instance."""

    id: str
    state: str  # created | running | exited | unknown
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    image: str = ""
    image_ref: str = ""
    restart_count: int = 0

    def terminated(self) -> dict[str, Any]:
        reason = self.reason or ("Completed" if self.exit_code == 0 else "Error")
        out: dict[str, Any] = {"exitCode": self.exit_code, "reason": reason,
                               "startedAt": rfc3339(self.started_at), "finishedAt": rfc3339(self.finished_at),
                               "containerID": RUNTIME_PREFIX + self.id}
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class ContainerView:
    """One container of the pod as the worker sees it this sync."""

    name: str
    image: str
    current: CRIContainer | None = None
    previous: CRIContainer | None = None
    restart_count: int = 0
    waiting_reason: str = ""     # why it is not running: ContainerCreating, CrashLoopBackOff, ErrImagePull...
    waiting_message: str = ""
    will_restart: bool = False   # exited but the policy will start it again (so: waiting, lastState)
    ready: bool = False
    started: bool | None = None


def container_status(v: ContainerView) -> dict[str, Any]:
    cur = v.current
    st: dict[str, Any] = {"name": v.name, "image": v.image, "imageID": "", "ready": False,
                          "restartCount": v.restart_count, "state": {}, "lastState": {}}
    if cur is not None:
        st["imageID"] = cur.image_ref
        st["containerID"] = RUNTIME_PREFIX + cur.id
    if cur is not None and cur.state == RUNNING:
        st["state"] = {"running": {"startedAt": rfc3339(cur.started_at)}}
        st["ready"] = v.ready
        st["started"] = bool(v.started) if v.started is not None else True
        if v.previous is not None and v.previous.state == EXITED:
            st["lastState"] = {"terminated": v.previous.terminated()}
    elif cur is not None and cur.state == EXITED and not v.will_restart:
        st["state"] = {"terminated": cur.terminated()}
        st["started"] = False
        if v.previous is not None and v.previous.state == EXITED:
            st["lastState"] = {"terminated": v.previous.terminated()}
    else:
        waiting: dict[str, Any] = {"reason": v.waiting_reason or "ContainerCreating"}
        if v.waiting_message:
            waiting["message"] = v.waiting_message
        st["state"] = {"waiting": waiting}
        st["started"] = False
        last = cur if cur is not None and cur.state == EXITED else v.previous
        if last is not None and last.state == EXITED:
            st["lastState"] = {"terminated": last.terminated()}
    return st


def _counts(statuses: list[dict[str, Any]]) -> dict[str, int]:
    c = {"running": 0, "waiting": 0, "stopped": 0, "succeeded": 0, "unknown": 0}
    for s in statuses:
        state = s.get("state") or {}
        if "running" in state:
            c["running"] += 1
        elif "terminated" in state:
            c["stopped"] += 1
            if state["terminated"].get("exitCode") == 0:
                c["succeeded"] += 1
        elif "waiting" in state:
            if "terminated" in (s.get("lastState") or {}):
                c["stopped"] += 1
            else:
                c["waiting"] += 1
        else:
            c["unknown"] += 1
    return c


def init_done(init_statuses: list[dict[str, Any]]) -> bool:
    return all((s.get("state") or {}).get("terminated", {}).get("exitCode") == 0 for s in init_statuses)


def pod_phase(restart_policy: str, init_statuses: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> str:
    """The kubelet's getPhase."""
    for s in init_statuses:
        term = (s.get("state") or {}).get("terminated")
        if term is not None and term.get("exitCode") != 0 and restart_policy == "Never":
            return "Failed"
    if not init_done(init_statuses):
        return "Pending"
    c = _counts(statuses)
    if c["waiting"] > 0:
        return "Pending"
    if c["running"] > 0 and c["unknown"] == 0:
        return "Running"
    if c["running"] == 0 and c["stopped"] > 0 and c["unknown"] == 0:
        if restart_policy == "Always":
            return "Running"
        if c["stopped"] == c["succeeded"]:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(ctype: str, ok: bool, previous: dict[str, dict[str, Any]], now: str, reason: str = "",
               message: str = "") -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    ltt = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
    c: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": ltt}
    if not ok and reason:
        c["reason"] = reason
        if message:
            c["message"] = message
    return c


def build_status(
    pod: dict[str, Any],
    init_views: list[ContainerView],
    views: list[ContainerView],
    *,
    pod_ips: list[str],
    host_ip: str,
    start_time: str | None,
    now: str | None = None,
    terminal: tuple[str, str, str] | None = None,
    ephemeral_views: list[ContainerView] | None = None,
) -> dict[str, Any]:
    """The full status the agent wants the API to hold. `terminal` = (phase, reason,
    message) forces a final phase (admission rejection, activeDeadlineSeconds). Ephemeral
    containers are reported but, as debugging aids, count toward neither phase nor readiness."""
    now = now or now_rfc3339()
    spec = pod.get("spec") or {}
    old = pod.get("status") or {}
    previous = {c.get("type", ""): c for c in old.get("conditions") or []}
    init_statuses = [container_status(v) for v in init_views]
    statuses = [container_status(v) for v in views]
    if terminal is not None:
        phase = terminal[0]
    else:
        phase = pod_phase(spec.get("restartPolicy") or "Always", init_statuses, statuses)
        if old.get("phase") in ("Succeeded", "Failed"):
            phase = old["phase"]  # terminal phases never go back
    initialized = init_done(init_statuses)
    unready = [s["name"] for s in statuses if not s["ready"]]
    ready = not unready and phase == "Running"
    uninit = [s["name"] for s in init_statuses if (s.get("state") or {}).get("terminated", {}).get("exitCode") != 0]
    reason = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
    msg = "" if reason == "PodCompleted" else f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        _condition("PodReadyToStartContainers", bool(pod_ips) or bool(spec.get("hostNetwork")), previous, now),
        _condition("Initialized", initialized, previous, now,
                   "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotInitialized",
                   f"containers with incomplete status: [{' '.join(uninit)}]"),
        _condition("Ready", ready, previous, now, reason, msg),
        _condition("ContainersReady", ready, previous, now, reason, msg),
        _condition("PodScheduled", True, previous, now),
    ]
    if "PodScheduled" in previous:
        conditions[-1] = previous["PodScheduled"]
    if terminal is not None and terminal[1] == "Evicted":
        dt = _condition("DisruptionTarget", True, previous, now)
        dt.update(reason="TerminationByKubelet", message=terminal[2])  # a True condition that explains itself
        conditions.append(dt)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "startTime": start_time,
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    }
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    if ephemeral_views:
        status["ephemeralContainerStatuses"] = [container_status(v) for v in ephemeral_views]
    if terminal is not None:
        status["reason"], status["message"] = terminal[1], terminal[2]
    return {k: v for k, v in status.items() if v is not None}


def merge_diff(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` for the keys of `new` (keys only in
    `old` are deleted with null); lists are replaced whole. Returns {} when equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {}
    for k, v in new.items():
        if k not in old:
            out[k] = v
        elif old[k] != v:
            out[k] = merge_diff(old[k], v) if isinstance(v, dict) and isinstance(old[k], dict) else v
    for k in old:
        if k not in new:
            out[k] = None
    return out


def status_patch(api_status: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The patch for pods/status: only fields the agent owns; keys others own (e.g.
    nominatedNodeName, qosClass) are left alone."""
    owned = {"phase", "conditions", "hostIP", "hostIPs", "podIP", "podIPs", "startTime", "containerStatuses",
             "initContainerStatuses", "ephemeralContainerStatuses", "reason", "message", "qosClass"}
    old = {k: v for k, v in api_status.items() if k in owned}
    new = {k: v for k, v in wanted.items() if k in owned}
    return merge_diff(old, new)
