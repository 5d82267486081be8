"""Restarting the daemon (SIGTERM, or kill -9) leaves pods running, and the new one sees them all."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cri.api import api_pb2 as pb
from kubeletpy.cli.crictl import CRIClient

from .conftest import Daemon, Env, ctr_config, pod_config, run_ctr, wait_state


def _view(cri: CRIClient, sids: list[str]) -> dict:
    """Everything the kubelet would look at, minus timestamps that are taken per call."""
    pods = {p.id: (p.state, p.metadata.name, dict(p.labels)) for p in cri.list_pods() if p.id in sids}
    status = {}
    for sid in sids:
        s = cri.pod_status(sid).status
        status[sid] = (s.state, s.network.ip, s.created_at, s.linux.namespaces.options.pid)
    ctrs = {}
    for c in cri.list_containers():
        if c.pod_sandbox_id in sids:
            st = cri.container_status(c.id).status
            ctrs[c.id] = (c.state, st.exit_code, st.reason, st.started_at, st.finished_at, st.image_ref,
                          st.log_path)
    return {"pods": pods, "status": status, "containers": ctrs}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_restart_keeps_pods(daemon: Daemon, env: Env, sig: int) -> None:
    cri = daemon.client
    assert cri is not None
    cfg = pod_config("restart", labels={"r": "1"})
    sid = cri.run_pod(cfg)
    ids = {
        "sleeper": run_ctr(cri, sid, cfg, "sleeper", ["sleep", "3600"]),
        "quitter": run_ctr(cri, sid, cfg, "quitter", ["sh", "-c", "exit 3"]),
        "created": cri.create_container(sid, ctr_config("created", ["true"]), cfg),
    }
    wait_state(cri, ids["quitter"], pb.CONTAINER_EXITED)
    pid = json.loads(cri.container_status(ids["sleeper"], verbose=True).info["info"])["pid"]
    before = _view(cri, [sid])
    lease_before = env.leases()

    cri = daemon.restart(sig)
    os.kill(pid, 0)  # the container outlived the daemon
    assert _view(cri, [sid]) == before
    assert env.leases() == lease_before
    assert cri.exec_sync(ids["sleeper"], ["echo", "still-here"]).stdout == b"still-here\n"
    cri.start_container(ids["created"])
    wait_state(cri, ids["created"], pb.CONTAINER_EXITED)

    cri.stop_pod(sid)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}")
    assert cri.pod_status(sid).status.state == pb.SANDBOX_NOTREADY
    assert env.leases() == [x for x in lease_before if x != before["status"][sid][1]]
    assert all(cri.container_status(c).status.state == pb.CONTAINER_EXITED for c in ids.values())
    cri.remove_pod(sid)
    assert sid not in [p.id for p in cri.list_pods()]
    assert not any(c.pod_sandbox_id == sid for c in cri.list_containers())


def test_pod_that_died_while_the_daemon_was_down(daemon: Daemon, env: Env) -> None:
    """Its shim and infra are killed meanwhile: NOTREADY afterwards, and StopPodSandbox still releases the IP."""
    cri = daemon.client
    assert cri is not None
    cfg = pod_config("doomed")
    sid = cri.run_pod(cfg)
    cid = run_ctr(cri, sid, cfg, "main", ["sleep", "3600"])
    ip = cri.pod_status(sid).status.network.ip
    info = json.loads(cri.pod_status(sid, verbose=True).info["info"])
    ctr_pid = json.loads(cri.container_status(cid, verbose=True).info["info"])["pid"]
    assert ip in env.leases()
    daemon.stop()
    for pid in (ctr_pid, info["shimPid"], info["pid"]):  # as a host reboot would
        os.kill(pid, signal.SIGKILL)
    cri = daemon.start()
    deadline = time.monotonic() + 5
    while cri.pod_status(sid).status.state != pb.SANDBOX_NOTREADY:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wait_state(cri, cid, pb.CONTAINER_EXITED)
    assert ip in env.leases()  # nothing is released behind the kubelet's back
    cri.stop_pod(sid)
    assert ip not in env.leases()
    cri.remove_pod(sid)
    assert sid not in [p.id for p in cri.list_pods()]


def test_startup_repair_releases_attachments_of_unknown_sandboxes(daemon: Daemon, env: Env) -> None:
    """An attachment no sandbox record refers to (crash between CNI ADD and the record,
    or a wiped state dir) is DEL'ed when the daemon starts: lease, veth and cache entry."""
    from cni.invoker import Invoker, load_conf_dir

    d = env.dirs()
    daemon.stop()
    ghost = secrets.token_hex(32)
    ns = f"kptrep-{ghost[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        inv = Invoker(bin_dirs=["/opt/cni/bin", "/usr/lib/cni"], cache_dir=d["cache"])
        res = inv.add(load_conf_dir(d["conf"]), ghost, f"/run/netns/{ns}", "eth0")
        ghost_ip = res["ips"][0]["address"].split("/")[0]
        assert ghost_ip in env.leases()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)  # as a reboot would
    host_veths_before = subprocess.run(["ip", "-o", "link", "show", "master", env.bridge],
                                       capture_output=True, text=True).stdout
    cri = daemon.start()
    assert ghost_ip not in env.leases()
    assert not list(Path(d["cache"]).glob(f"*{ghost}*"))
    host_veths_after = subprocess.run(["ip", "-o", "link", "show", "master", env.bridge],
                                      capture_output=True, text=True).stdout
    assert host_veths_after.count("\n") <= host_veths_before.count("\n")
    cri.version()
