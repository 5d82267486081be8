"""kill -9 of the runtime leaves containers running; a new instance rediscovers everything from disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from cri.runtime import ContainerState, PodSandboxState, Runtime

from .conftest import wait_exit

SCRIPT = textwrap.dedent("""
    import json, sys
    from cri.runtime import *
    roots = json.loads(sys.argv[1])
    rt = Runtime(roots["root"], roots["run_root"], roots["log_root"], cgroup_parent=roots["cgroup_parent"])
    sid = rt.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata("restart", "uid-restart", "test")))
    ids = {"sandbox": sid}
    for name, cmd in (("sleeper", ["sleep", "300"]), ("quitter", ["sh", "-c", "sleep 1; exit 7"]),
                      ("created", ["true"])):
        cid = rt.create_container(sid, ContainerConfig(metadata=ContainerMetadata(name),
                                  image=ImageSpec("kubeletpy.local/busybox:latest"), command=cmd))
        if name != "created":
            rt.start_container(cid)
        ids[name] = cid
    print(json.dumps(ids), flush=True)
    import time
    time.sleep(600)
""")


def test_runtime_crash_keeps_containers_and_state(rt: Runtime, rt_roots: dict) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(rt_roots)], stdout=subprocess.PIPE)
    try:
        ids = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)  # the runtime dies hard, mid-flight
        proc.wait()
    sid = ids["sandbox"]
    try:
        fresh = Runtime(rt_roots["root"], rt_roots["run_root"], rt_roots["log_root"],
                        cgroup_parent=rt_roots["cgroup_parent"], prewarm_shim=False)
        assert fresh.pod_sandbox_status(sid).state == PodSandboxState.SANDBOX_READY
        sleeper = fresh.container_status(ids["sleeper"])
        assert sleeper.state == ContainerState.CONTAINER_RUNNING
        os.kill(sleeper.pid, 0)
        assert fresh.container_status(ids["created"]).state == ContainerState.CONTAINER_CREATED
        quitter = wait_exit(fresh, ids["quitter"])  # exited while no runtime was alive
        assert quitter.exit_code == 7 and quitter.reason == "Error" and quitter.finished_at > quitter.started_at
        listed = {c.id: c.state for c in fresh.list_containers(pod_sandbox_id=sid)}
        assert listed == {ids["sleeper"]: ContainerState.CONTAINER_RUNNING,
                          ids["quitter"]: ContainerState.CONTAINER_EXITED,
                          ids["created"]: ContainerState.CONTAINER_CREATED}
        # the new instance drives the old shim: exec, start and stop still work
        assert fresh.exec_sync(ids["sleeper"], ["echo", "ok"], timeout=5).stdout == b"ok\n"
        fresh.start_container(ids["created"])
        assert wait_exit(fresh, ids["created"]).exit_code == 0
        fresh.stop_container(ids["sleeper"], timeout=1)
        assert fresh.container_status(ids["sleeper"]).state == ContainerState.CONTAINER_EXITED
    finally:
        rt.remove_pod_sandbox(sid)
    # the dead runtime's spare shim noticed EOF on its pipe and went away
    time.sleep(0.2)
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    assert int(f.read().rsplit(b")", 1)[1].split()[1]) != proc.pid
            except OSError:
                pass


def test_half_created_objects_are_cleaned_up_by_the_next_instance(rt_roots: dict) -> None:
    """A crash between mkdir and the record leaves a dir; a later instance undoes it (if old enough)."""
    import secrets as _s
    root = rt_roots["root"]
    old, young = _s.token_hex(32), _s.token_hex(32)
    for ident in (old, young):
        os.makedirs(f"{root}/containers/{ident}")
    os.utime(f"{root}/containers/{old}", (time.time() - 3600, time.time() - 3600))
    fresh = Runtime(root, rt_roots["run_root"], rt_roots["log_root"], cgroup_parent=rt_roots["cgroup_parent"],
                    prewarm_shim=False)
    fresh.close()
    assert not os.path.exists(f"{root}/containers/{old}")
    assert os.path.exists(f"{root}/containers/{young}")  # may be a create in progress elsewhere
    os.rmdir(f"{root}/containers/{young}")
