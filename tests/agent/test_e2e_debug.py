"""`kubectl debug` end to end: ephemeral containers through the real API server, agent and runtime.

The debug container joins the target container's PID namespace (CRI NamespaceMode.TARGET),
runs once, is reported in status.ephemeralContainerStatuses, and changes nothing about the
pod's readiness; `kubectl debug -i` attaches to it, `kubectl exec`/`logs` reach it by name,
and deleting the pod stops it with the rest.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from .harness import BUSYBOX, Cluster

pytestmark = pytest.mark.slow

DEBUG = ["--image", BUSYBOX, "--image-pull-policy", "Never", "--profile", "general"]


def eph_status(p: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in p["status"].get("ephemeralContainerStatuses") or [] if s["name"] == name), None)


def terminated(name: str) -> Any:
    return lambda p: ((eph_status(p, name) or {}).get("state") or {}).get("terminated")


def events(c: Cluster, pod: str) -> list[tuple[str, str]]:
    r = c.kubectl("get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json")
    return [(e["reason"], e["involvedObject"].get("fieldPath", "")) for e in json.loads(r.stdout)["items"]]


@pytest.fixture(scope="module")
def target(cluster: Cluster) -> str:
    """A running, Ready pod whose container `app` the debug containers target."""
    name = f"dbg-{secrets.token_hex(3)}"
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"nodeName": cluster.node, "terminationGracePeriodSeconds": 1,
                            "containers": [{"name": "app", "image": BUSYBOX, "imagePullPolicy": "Never",
                                            "command": ["sh", "-c", "exec sleep 3600"]}]}})
    cluster.wait_pod(name, Cluster.ready, 40, f"{name} Ready")
    return name


def test_debug_target_sees_its_processes_runs_once_and_leaves_the_pod_ready(cluster: Cluster, target: str) -> None:
    before = cluster.pod(target)
    r = cluster.kubectl("debug", target, *DEBUG, "--target", "app", "-c", "ps", "--", "ps", "-o", "pid,args")
    assert 'Targeting container "app"' in r.stdout + r.stderr
    p = cluster.wait_pod(target, terminated("ps"), 30, "the debug container to finish")
    st = eph_status(p, "ps")
    assert st is not None
    assert st["state"]["terminated"]["exitCode"] == 0 and st["state"]["terminated"]["reason"] == "Completed"
    assert st["restartCount"] == 0 and st["ready"] is False and st["lastState"] == {}
    assert st["containerID"].startswith("kubeletpy://") and st["imageID"] and st["image"] == BUSYBOX
    # in the target's PID namespace: its process is PID 1
    lines = cluster.kubectl("logs", target, "-c", "ps").stdout.splitlines()
    assert lines[0].split() == ["PID", "COMMAND"]
    assert lines[1].split() == ["1", "sleep", "3600"], lines
    assert any(ln.split()[1:] == ["ps", "-o", "pid,args"] for ln in lines[2:]), lines
    # the pod itself is untouched: still Ready, its container not restarted
    assert Cluster.ready(p) and p["status"]["phase"] == "Running"
    app = p["status"]["containerStatuses"][0]
    assert app["restartCount"] == 0 and app["containerID"] == before["status"]["containerStatuses"][0]["containerID"]
    assert [c["name"] for c in p["status"]["containerStatuses"]] == ["app"]
    evs = events(cluster, target)
    for reason in ("Pulled", "Created", "Started"):
        assert (reason, "spec.ephemeralContainers{ps}") in evs, evs


def test_debug_interactive_attach_exec_and_never_restarted(cluster: Cluster, target: str) -> None:
    ps_before = eph_status(cluster.pod(target), "ps")
    assert ps_before is not None
    # -i: kubectl waits for the container to run, then attaches with our stdin
    r = cluster.kubectl("debug", "-i", target, *DEBUG, "--target", "app", "-c", "shell", "--", "sh",
                        input="echo typed-$((6*7))\nps -o pid,args | grep -c '^ *1 sleep 3600$'\nexit 3\n")
    # attach ends in Success whatever the shell's exit code (as with a real kubelet), so kubectl
    # does not fall back to re-printing the container's log: each line comes once
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("Targeting container")]
    assert lines == ["typed-42", "1"] and "falling back" not in r.stderr, (r.stdout, r.stderr)
    p = cluster.wait_pod(target, terminated("shell"), 30, "the interactive debug container to exit")
    assert eph_status(p, "shell")["state"]["terminated"]["exitCode"] == 3  # type: ignore[index]
    # a long-running one: exec reaches it by name while the pod stays Ready
    cluster.kubectl("debug", target, *DEBUG, "-c", "sleeper", "--", "sleep", "3600")
    p = cluster.wait_pod(target, lambda p: "running" in ((eph_status(p, "sleeper") or {}).get("state") or {}), 30,
                         "the sleeper running")
    assert Cluster.ready(p)
    assert cluster.kubectl("exec", target, "-c", "sleeper", "--", "echo", "in-sleeper").stdout == "in-sleeper\n"
    # the containers that finished were never started again: same instance, no restarts, one Started each
    assert eph_status(cluster.pod(target), "ps") == ps_before
    evs = events(cluster, target)
    for name in ("ps", "shell", "sleeper"):
        assert evs.count(("Started", f"spec.ephemeralContainers{{{name}}}")) == 1, evs
    # deleting the pod stops the running ephemeral container with the rest
    cluster.kubectl("delete", "pod", target, "--wait=true", timeout=60)
    assert ("Killing", "spec.ephemeralContainers{sleeper}") in events(cluster, target)
