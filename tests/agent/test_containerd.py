"""The agent driving containerd (Debian's 1.6, CRI plugin) instead of kubeletpy's runtime.

The agent speaks only CRI, so the same binary should run pods on containerd: a private
containerd (tmp root/state/socket, reference CNI plugins from /usr/lib/cni, busybox imported
with `ctr`, configured as bench/bench_cri.py does), a control plane and an agent with
`--cri unix://<containerd socket>`; one busybox pod: node Ready, pod Running+Ready with a
`containerd://` containerID and a pod IP, logs, exec, deletion, and a clean host after.
`make test` installs containerd (a Debian package) for this test and for the CRI bench.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .harness import ROOT, Cluster, wait_for

sys.path.insert(0, str(ROOT / "bench"))
import bench_cri  # noqa: E402

IMAGE = "kubeletpy.local/busybox:latest"


class _Containerd(bench_cri.Containerd):
    image = IMAGE


def _rm_cgroup_tree(name: str) -> None:
    """The QoS parents runc created in every hierarchy (node-level, so no one else removes them)."""
    for ctrl in os.listdir("/sys/fs/cgroup"):
        top = Path("/sys/fs/cgroup") / ctrl / name
        if top.is_dir() and not (Path("/sys/fs/cgroup") / ctrl).is_symlink():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda x: -len(x[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)


def test_agent_runs_a_pod_on_containerd() -> None:
    base = Path(tempfile.mkdtemp(prefix="kpc-", dir="/tmp"))
    ctd = _Containerd(base / "ctd", bench_cri.free_subnet(set()))
    c = Cluster(base / "cl")
    leftovers: list[str] = []
    try:
        ctd.start()
        c.sock = base / "ctd" / "cri.sock"
        c.start_controlplane()
        c.start_agent()
        wait_for(lambda: c.kubectl("get", "node", c.node, check=False).returncode == 0, 30, "node registration")
        wait_for(c.node_ready, 30, "node Ready")
        node = c.get("node", c.node, "")
        assert node is not None and node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
        c.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bb"},
                 "spec": {"terminationGracePeriodSeconds": 1, "nodeName": c.node,
                          "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                                          "command": ["sh", "-c", "echo hello-from-containerd; exec sleep 3600"]}]}})
        pod = c.wait_pod("bb", c.ready, 60, "the pod Running and Ready on containerd")
        cs = pod["status"]["containerStatuses"][0]
        assert cs["containerID"].startswith("containerd://") and cs["ready"] and "running" in cs["state"]
        assert pod["status"]["podIP"].startswith(ctd.subnet.rsplit(".", 1)[0] + ".")
        wait_for(lambda: "hello-from-containerd" in c.kubectl("logs", "bb", check=False).stdout, 20, "the pod's log")
        r = c.kubectl("exec", "bb", "--", "sh", "-c", "echo exec-$((40+2))", check=False)
        assert r.returncode == 0 and r.stdout.strip() == "exec-42", r.stderr
        c.kubectl("delete", "pod", "bb", "--grace-period=1", "--wait=false")
        wait_for(lambda: c.kubectl("get", "pod", "bb", check=False).returncode != 0, 40, "the pod deleted")
    finally:
        with contextlib.suppress(Exception):
            c.kubectl("delete", "pods", "--all", "--grace-period=1", "--wait=false", check=False, timeout=20)
            wait_for(lambda: not c.kubectl("get", "pods", "-o", "name", check=False).stdout.strip(), 30,
                     "all pods deleted")
        leftovers = c.close()
        logs = c.log("agent")[-4000:]
        c.purge()
        ctd.stop()
        ctd.cleanup()
        _rm_cgroup_tree(c.cgroup_root)
        shutil.rmtree(base, ignore_errors=True)
    assert not leftovers, f"host not clean after the cluster stopped: {leftovers}\n{logs}"
