"""Runtime benchmarks, side by side in one run (as root):

  1. container create+start (and until exit) of busybox /bin/true through the Python API,
     sandbox already running — vs `crun run` and `runc run` on an equivalent bundle
     (same rootfs, joining the same pod's net/ipc/uts namespaces, new mount+pid ns);
  2. pod sandbox creation (namespaces + infra + pod cgroup + netns bind mount, no CNI);
  3. memory (PSS) of shim + infra per pod with 50 pods running.

    .venv/bin/python bench/bench_runtime.py [--n 30] [--pods 50]

Every competitor runs in the same rounds, in a shuffled order per round, so load from other
work on the host hits them alike; on a busy shared host, compare several runs' medians (or
run the whole bench under `nice -n -20`, which all competitors inherit).

Debian 12's crun 1.8 refuses a hybrid cgroup layout while any controller sits on the
v2 mount (here: hugetlb). With --crun-hugetlb (default on) the bench mounts hugetlb
as a v1 hierarchy for the duration of the crun runs, as the brief allows, and
unmounts it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cri.images import ImageStore  # noqa: E402
from cri.runtime import (  # noqa: E402
    ContainerConfig,
    ContainerMetadata,
    ContainerState,
    ImageSpec,
    PodSandboxConfig,
    PodSandboxMetadata,
    Runtime,
)

BUSYBOX = "kubeletpy.local/busybox:latest"


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[int(len(xs) * 0.9) - 1] if len(xs) >= 10 else xs[-1]
    return f"median {statistics.median(xs):6.2f} ms   p90 {p90:6.2f} ms   min {xs[0]:6.2f} ms  (n={len(xs)})"


def wait_exited(rt: Runtime, cid: str) -> None:
    while rt.container_status(cid).state != ContainerState.CONTAINER_EXITED:
        time.sleep(0.0005)


def api_once(rt: Runtime, sid: str, i: int) -> tuple[float, float]:
    cfg = ContainerConfig(metadata=ContainerMetadata(f"true-{i}"), image=ImageSpec(BUSYBOX), command=["/bin/true"])
    t0 = time.perf_counter()
    cid = rt.create_container(sid, cfg)
    rt.start_container(cid)
    t1 = time.perf_counter()
    wait_exited(rt, cid)
    t2 = time.perf_counter()
    rt.remove_container(cid)
    return (t1 - t0) * 1000, (t2 - t0) * 1000


def make_bundle(d: str, rootfs: str, infra_pid: int) -> None:
    os.makedirs(d, exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", d], check=True)
    with open(f"{d}/config.json") as f:
        spec = json.load(f)
    spec["root"] = {"path": rootfs, "readonly": False}
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    nss = [ns for ns in spec["linux"]["namespaces"] if ns["type"] in ("pid", "mount")]
    nss += [{"type": t, "path": f"/proc/{infra_pid}/ns/{p}"} for t, p in
            (("network", "net"), ("ipc", "ipc"), ("uts", "uts"))]
    spec["linux"]["namespaces"] = nss
    spec.pop("hostname", None)
    with open(f"{d}/config.json", "w") as f:
        json.dump(spec, f)


def oci_once(tool: str, bundle: str, rt: Runtime | None = None) -> float:
    """`tool run` once; with `rt`, after preparing a fresh overlay snapshot (the rootfs work
    our create does). Tearing the snapshot down is left out, as our container's removal is."""
    name = f"kpybench-{secrets.token_hex(4)}"
    t0 = time.perf_counter()
    if rt is not None:
        rt.snapshots.prepare(name, rt.images.get(BUSYBOX))
    r = subprocess.run([tool, "run", "--bundle", bundle, name], capture_output=True)
    t1 = time.perf_counter()
    if rt is not None:
        rt.snapshots.remove(name)
    if r.returncode != 0:
        subprocess.run([tool, "delete", "-f", name], capture_output=True)
        raise RuntimeError(f"{tool} failed: {r.stderr.decode().strip()}")
    return (t1 - t0) * 1000


def hugetlb_on_v2() -> bool:
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            return bool(f.read().split())
    except OSError:
        return False


def restore_hugetlb() -> None:
    """Unmount our v1 hugetlb hierarchy so the kernel hands the controller back to cgroup2.

    The hierarchy only dies when unmounted with no child cgroups left; crun's just-removed
    ones can linger a moment, so remount and unmount again until it is gone.
    """
    mp = "/sys/fs/cgroup/hugetlb"
    for _ in range(20):
        subprocess.run(["umount", mp], check=False)
        time.sleep(0.5)
        if hugetlb_on_v2():
            break
        subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", mp], check=False)
    else:
        print("warning: hugetlb did not return to the cgroup2 mount", file=sys.stderr)
    os.rmdir(mp)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--no-crun-hugetlb", action="store_true")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="kpy-bench-")
    parent = f"kubeletpy-bench-{secrets.token_hex(3)}"
    ImageStore(root=f"{base}/state").build_busybox()
    rt = Runtime(f"{base}/state", f"{base}/run", f"{base}/logs", cgroup_parent=parent)
    sandboxes: list[str] = []
    mounted_hugetlb = False
    try:
        # -- sandboxes: warm (a spare shim is ready, as in steady state) -----------------
        time.sleep(0.3)
        sb_times = []
        for i in range(20):
            t0 = time.perf_counter()
            sid = rt.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata(f"b{i}", f"uid-b{i}", "bench")))
            sb_times.append((time.perf_counter() - t0) * 1000)
            sandboxes.append(sid)
            time.sleep(0.15)  # let the next spare shim finish starting (interpreter start-up)
        sid = sandboxes[0]

        # -- containers: interleaved, so load from other work on the host hits all alike --------
        infra = rt.pod_sandbox_status(sid).infra_pid
        rootfs_key = "bench-oci-rootfs"
        rootfs = str(rt.snapshots.prepare(rootfs_key, rt.images.get(BUSYBOX)))
        bundle = f"{base}/bundle"
        make_bundle(bundle, rootfs, infra)
        if hugetlb_on_v2() and not args.no_crun_hugetlb:
            os.makedirs("/sys/fs/cgroup/hugetlb", exist_ok=True)
            subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", "/sys/fs/cgroup/hugetlb"],
                           check=True)
            mounted_hugetlb = True
        api_cs: list[float] = []
        api_exit: list[float] = []
        results: dict[str, list[float] | str] = {"crun": [], "crun+snap": [], "runc": []}
        rng = random.Random(42)
        for i in range(args.n + 3):
            # random order each round: one run's after-effects (cgroup teardown, RCU) shouldn't
            # always land on the same competitor
            order = ["api", "crun", "crun+snap", "runc"]
            rng.shuffle(order)
            for key in order:
                if key == "api":
                    a, b = api_once(rt, sid, i)
                    if i >= 3:  # warm-up: first runs compile caches, page in code
                        api_cs.append(a)
                        api_exit.append(b)
                    continue
                if isinstance(results[key], str):
                    continue
                try:
                    t = oci_once(key.split("+")[0], bundle, rt if key == "crun+snap" else None)
                except RuntimeError as e:
                    results[key] = str(e)
                    continue
                if i >= 3:
                    results[key].append(t)  # type: ignore[union-attr]
        crun, crun_snap, runc = results["crun"], results["crun+snap"], results["runc"]
        if mounted_hugetlb:
            restore_hugetlb()
            mounted_hugetlb = False
        rt.snapshots.remove(rootfs_key)

        # -- memory at N pods -------------------------------------------------------------------
        while len(sandboxes) < args.pods:
            i = len(sandboxes)
            sandboxes.append(rt.run_pod_sandbox(
                PodSandboxConfig(metadata=PodSandboxMetadata(f"b{i}", f"uid-b{i}", "bench"))))
        time.sleep(0.5)
        per_pod = []
        for s in sandboxes[: args.pods]:
            st = rt.pod_sandbox_status(s)
            # the shim and every process it keeps per pod: infra + the pre-forked warm child
            per_pod.append(pss_kib(st.shim_pid) + sum(pss_kib(p) for p in children(st.shim_pid)))
        print(f"kubeletpy runtime bench   (host: {os.uname().release}, {os.cpu_count()} CPUs, cgroup v1 hybrid)")
        print(f"command: {sys.executable} {' '.join(sys.argv)}   (load average {os.getloadavg()[0]:.2f}:"
              " other work on a shared host moves every number here)")
        print()
        print("container create+start, busybox /bin/true, sandbox exists:")
        print(f"  kubeletpy API create+start      {ms(api_cs)}")
        print(f"  kubeletpy API create→exited     {ms(api_exit)}")
        for name, res in (("crun run (whole lifecycle)", crun), ("crun run + overlay prepare", crun_snap),
                          ("runc run (whole lifecycle)", runc)):
            print(f"  {name:<31} {ms(res) if isinstance(res, list) else res}")
        # What each side pays: kubeletpy create+start = overlay rootfs + cgroups + durable record + shim
        # spawn until execve succeeded; `crun run` = binary start + cgroups + namespaces + mounts + execve
        # + wait for exit + delete, on an already-made rootfs. The second ratio adds the same overlay
        # prepare to crun; create→exited is the closer match to crun's whole lifecycle.
        med = statistics.median
        for label, ref in (("crun run", crun), ("crun run + overlay prepare", crun_snap)):
            if isinstance(ref, list):
                print(f"  ratio kubeletpy create+start / {label}: {med(api_cs) / med(ref):.2f}x"
                      f"   (create→exited / {label}: {med(api_exit) / med(ref):.2f}x)")
        print()
        print(f"pod sandbox create (namespaces + infra + cgroup + netns bind, no CNI): {ms(sb_times)}")
        print(f"PSS per pod (shim + infra + warm child) at {args.pods} pods: mean {statistics.mean(per_pod) / 1024:.2f} MiB,"
              f" max {max(per_pod) / 1024:.2f} MiB")
    finally:
        if mounted_hugetlb:
            restore_hugetlb()
        for s in sandboxes:
            rt.remove_pod_sandbox(s)
        rt.close()
        for ctrl in ("cpu", "cpuacct", "memory", "pids"):
            d = f"/sys/fs/cgroup/{ctrl}/{parent}"
            if os.path.isdir(d):
                for sub, dirs, _ in os.walk(d, topdown=False):
                    for x in dirs:
                        os.rmdir(os.path.join(sub, x))
                os.rmdir(d)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
