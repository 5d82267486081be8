"""`kubeletpy up` / `status` / `down` end to end: a throw-away single-node cluster (own
dirs, ports, bridge, pod CIDR and cgroup names), the example web pod applied with real
kubectl and reached over its pod IP, then `down` leaving nothing behind."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KUBECTL = "/usr/bin/kubectl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _host_state(tag: str, base: Path) -> dict[str, object]:
    """What a cluster leaves on the host, restricted to this test's names."""
    mounts = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if str(base) in ln]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/kpt*{tag}*"))
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(base).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                procs.append(pid)
        except OSError:
            pass
    leases = sorted(p.name for p in (base / "cni" / "networks").glob("*/*") if p.name[0].isdigit())
    return {"mounts": mounts, "bridge": f"kptb{tag}" in links, "veths_on_bridge": f"master kptb{tag}" in links,
            "cgroups": cgroups, "procs": procs, "leases": leases}


@pytest.fixture
def cluster(tmp_path: Path):
    tag = secrets.token_hex(2)
    base = tmp_path / "c"
    args = ["--root", str(base / "state"), "--run-root", str(base / "run"), "--log-dir", str(base / "log"),
            "--pod-log-dir", str(base / "pods"), "--etc-dir", str(base / "etc"), "--port", str(_free_port()),
            "--agent-port", "0", "--node-name", f"kpt-node-{tag}", "--cni-conf-dir", str(base / "net.d"),
            "--cni-bin-dir", str(base / "bin"), "--cni-state-dir", str(base / "cni"), "--cni-bridge", f"kptb{tag}",
            "--cluster-cidr", f"10.{200 + int(tag, 16) % 40}.0.0/16", "--cgroup-parent", f"kpt-rt-{tag}",
            "--cgroup-root", f"kpt-pods-{tag}"]

    def kp(*cmd: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kubeletpy", *cmd, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
    kp.args = args  # type: ignore[attr-defined]

    def kubectl(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, "--kubeconfig", str(base / "etc" / "admin.kubeconfig"),
                               "--cache-dir", str(tmp_path / "kcache"), *cmd],
                              capture_output=True, text=True, timeout=timeout)

    try:
        yield kp, kubectl, tag, base
    finally:
        kp("down", "--purge")


def test_up_runs_the_web_example_and_down_leaves_nothing(cluster) -> None:
    kp, kubectl, tag, base = cluster
    up = kp("up")
    assert up.returncode == 0, up.stdout + up.stderr + "".join(
        f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in (base / "log").glob("*.log"))
    for name in ("control-plane", "runtime", "agent"):
        assert f"{name:14} started" in up.stdout
    assert f"kpt-node-{tag} Ready" in up.stdout

    again = kp("up")  # idempotent: nothing restarted, pods undisturbed
    assert again.returncode == 0 and again.stdout.count("already running") == 3, again.stdout

    r = kubectl("apply", "-f", str(REPO / "examples" / "web.yaml"))
    assert r.returncode == 0, r.stderr
    r = kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=120s")
    assert r.returncode == 0, r.stderr + kubectl("get", "pod", "web", "-o", "yaml").stdout
    ip = kubectl("get", "pod", "web", "-o", "jsonpath={.status.podIP}").stdout
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=10) as resp:
        assert resp.read().decode().strip() == "hello from web"
    r = kubectl("exec", "web", "--", "hostname")
    assert r.stdout.strip() == "web", r.stderr

    st = kp("status")
    assert st.returncode == 0 and st.stdout.count("healthy") == 3 and "Ready" in st.stdout, st.stdout

    during = _host_state(tag, base)
    assert during["bridge"] and during["veths_on_bridge"] and during["leases"] == [ip]

    # the runtime dies hard (its socket file stays behind): `down` starts one just to remove the pod
    os.kill(int((base / "run" / "runtime.pid").read_text()), 9)
    down = kp("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "started to remove the pods it left" in down.stdout and "1 removed" in down.stdout, down.stdout
    after = _host_state(tag, base)
    assert after == {"mounts": [], "bridge": False, "veths_on_bridge": False, "cgroups": [], "procs": [],
                     "leases": []}, after
    assert kp("status").returncode == 3  # stopped components are reported as such
    purge = kp("down", "--purge")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not (base / "run").exists() and not (base / "state").exists() and not (base / "etc").exists()


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait(pred, timeout: float, what: str):  # noqa: ANN001, ANN202 - tiny polling helper
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_foreground_supervises_one_process_tree(cluster) -> None:
    """`up --foreground`: the components are our children, a killed one is restarted,
    SIGTERM stops them all in order, and the pods they ran survive until `down`."""
    import signal

    kp, kubectl, tag, base = cluster
    up_argv = [sys.executable, "-m", "kubeletpy", "up", "--foreground", *kp.args]
    log = open(base.parent / "up-foreground.log", "wb")  # noqa: SIM115 - closed in finally
    up = subprocess.Popen(up_argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        out = lambda: (base.parent / "up-foreground.log").read_text()  # noqa: E731
        _wait(lambda: "supervising" in out() or up.poll() is not None, 240, "the node to be Ready")
        assert up.poll() is None and f"kpt-node-{tag} Ready" in out(), out()
        pids = {n: int((base / "run" / f"{n}.pid").read_text()) for n in ("control-plane", "runtime", "agent")}
        assert {n: _ppid(p) for n, p in pids.items()} == {n: up.pid for n in pids}

        r = kubectl("apply", "-f", str(REPO / "examples" / "web.yaml"))
        assert r.returncode == 0, r.stderr
        r = kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=120s")
        assert r.returncode == 0, r.stderr

        os.kill(pids["agent"], signal.SIGKILL)  # a dead component comes back, still our child
        _wait(lambda: "agent          restarted" in out(), 30, "the agent to be restarted")
        new_agent = int((base / "run" / "agent.pid").read_text())
        assert new_agent != pids["agent"] and _ppid(new_agent) == up.pid

        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, out()
        assert out().count("stopped") >= 3, out()
        for n, p in {**pids, "agent": new_agent}.items():
            assert not Path(f"/proc/{p}").exists(), f"{n} still running"
            assert not (base / "run" / f"{n}.pid").exists()
        # the pod outlived its node components, as it would the kubelet and containerd
        during = _host_state(tag, base)
        assert during["veths_on_bridge"] and len(during["leases"]) == 1
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        log.close()
    down = kp("down")  # a runtime started just to remove the pod it finds in its records
    assert down.returncode == 0, down.stdout + down.stderr
    assert "1 removed" in down.stdout, down.stdout
    after = _host_state(tag, base)
    assert after == {"mounts": [], "bridge": False, "veths_on_bridge": False, "cgroups": [], "procs": [],
                     "leases": []}, after


def test_down_stops_a_foreground_supervisor_first(cluster) -> None:
    """`down` while `up --foreground` runs: the supervisor is stopped before anything else, so it
    cannot restart what `down` stops, and the host ends clean."""
    kp, kubectl, tag, base = cluster
    log_path = base.parent / "up-fg.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "kubeletpy", "up", "--foreground", *kp.args], stdout=log,
                              stderr=subprocess.STDOUT, cwd=REPO)
    try:
        _wait(lambda: "supervising" in log_path.read_text() or up.poll() is not None, 240, "the node to be Ready")
        assert up.poll() is None, log_path.read_text()
        second = kp("up", "--foreground")  # one supervisor per cluster
        assert second.returncode == 1 and "already supervises" in second.stderr, second.stdout + second.stderr
        down = kp("down")
        assert down.returncode == 0 and "supervisor" in down.stdout, down.stdout + down.stderr
        assert up.wait(30) == 0
        assert "restarted" not in log_path.read_text(), log_path.read_text()
        after = _host_state(tag, base)
        assert after["procs"] == [] and not after["bridge"], after
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
