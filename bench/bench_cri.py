"""CRI benchmark: pod start through the CRI socket, kubeletpy vs containerd, with one client.

    .venv/bin/python bench/bench_cri.py [--n 20] [--pods 100] [--threads 8] [--no-containerd]

"Pod start" = RunPodSandbox (with CNI networking) + CreateContainer + StartContainer of
busybox `sleep`, timed from the client (kubeletpy.cli.crictl.CRIClient) over the unix
socket. Then --pods pods at once from --threads client threads: wall time, p99 of
one pod's start, and the memory of the daemon plus its shims with all pods up (RSS,
and PSS, which counts pages shared between the forked shims once).

containerd runs only if its binaries are installed (Debian package `containerd`; this
script installs nothing): on a tmp root/state/socket with its CRI plugin, the
reference CNI plugins from /usr/lib/cni, `restrict_oom_score_adj = true` (root here
lacks CAP_SYS_RESOURCE), and a busybox image plus a pause image built from the host's
busybox, imported with `ctr`. Both runtimes get a private bridge and 10.249.x.0/24
subnet, and everything is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402
from support.host import clean_host, free_subnet, unmount_under  # noqa: E402
from support.process import spawn, stop_process  # noqa: E402
from support.runtime import runtime_argv, wait_cri  # noqa: E402

from cri.api import api_pb2 as pb  # noqa: E402
from cri.images import ImageStore  # noqa: E402
from cri.images.busybox import layer_tar  # noqa: E402
from kubeletpy.cli.crictl import CRIClient  # noqa: E402


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs):7.1f} ms   p90 {xs[max(0, int(len(xs) * 0.9) - 1)]:7.1f} ms   " \
           f"min {xs[0]:6.1f} ms  (n={len(xs)})"


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(len(xs) * 0.99)) - 1)]


def mem_kib(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over `pids`."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                k, _, v = line.partition(":")
                if k == "Rss":
                    rss += int(v.split()[0])
                elif k == "Pss":
                    pss += int(v.split()[0])
    return rss, pss


def children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{p}/stat").read_bytes()
                if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                    out.append(int(p))
    return out


class Target:
    """One runtime under test: how to start it, talk to it, name its image, find its shims, clean up."""

    name = ""
    image = ""

    def __init__(self, base: Path, subnet: str) -> None:
        self.base, self.subnet = base, subnet
        self.tag = secrets.token_hex(3)
        self.bridge = f"kpb{self.tag}"
        self.cgroup = f"kpt-bench-{self.name}-{self.tag}"
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)

    @property
    def socket(self) -> Path:
        return self.base / "cri.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def conflist(self, plugins_extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": f"kpbench-{self.name}-{self.tag}", "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                      "dataDir": str(self.base / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}

    def pod_config(self, name: str) -> pb.PodSandboxConfig:
        cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=name, uid=secrets.token_hex(8),
                                                                namespace="bench"),
                                  log_directory=str(self.base / "logs" / name))
        cfg.linux.security_context.namespace_options.pid = pb.CONTAINER
        return cfg

    @property
    def log(self) -> Path:
        return self.base / "daemon.log"

    def wait_up(self) -> CRIClient:
        assert self.proc is not None
        return wait_cri(self.proc, self.socket, self.log, timeout=60, client_timeout=120, what=self.name)

    def shim_pids(self, client: CRIClient) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
            self.proc = None

    def cleanup(self) -> None:
        clean_host(base=self.base, bridge=self.bridge, subnet=self.subnet, cgroup_parent=self.cgroup)


class Kubeletpy(Target):
    name = "kubeletpy"
    image = "kubeletpy.local/busybox:latest"

    def start(self) -> CRIClient:
        ImageStore(root=self.base / "state").build_busybox()
        (self.base / "net.d").mkdir(exist_ok=True)
        (self.base / "net.d" / "10-bench.conflist").write_text(json.dumps(self.conflist()))
        self.proc = spawn(runtime_argv(self.base, self.socket, self.cgroup, "--log-level", "warning"), self.log)
        return self.wait_up()

    def shim_pids(self, client: CRIClient) -> list[int]:
        pids = []
        for p in client.list_pods():
            info = json.loads(client.pod_status(p.id, verbose=True).info["info"])
            pids += [info["shimPid"], info["pid"]]   # the shim and its infra ("pause")
        return pids


class Containerd(Target):
    name = "containerd"
    image = "docker.io/kubeletpy/busybox:latest"
    pause = "docker.io/kubeletpy/pause:latest"

    @staticmethod
    def available() -> bool:
        return all(shutil.which(b) for b in ("containerd", "ctr", "containerd-shim-runc-v2", "runc")) and \
            os.path.exists("/usr/lib/cni/bridge")

    def pod_config(self, name: str) -> pb.PodSandboxConfig:
        cfg = super().pod_config(name)
        cfg.linux.cgroup_parent = f"/{self.cgroup}/pod{cfg.metadata.uid}"
        return cfg

    def start(self) -> CRIClient:
        b = self.base
        (b / "net.d").mkdir(exist_ok=True)
        (b / "net.d" / "10-bench.conflist").write_text(json.dumps(self.conflist()))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (b / "config.toml").write_text(f"""version = 2
root = "{b}/root"
state = "{b}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{b}/cri.sock"
[ttrpc]
  address = "{b}/cri.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"
[{cri}]
  sandbox_image = "{self.pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{b}/net.d"
""")
        self.proc = spawn(["containerd", "--config", str(b / "config.toml")], self.log, cwd=None)
        client = self.wait_up()
        for ref, cmd in ((self.image, ["sh"]), (self.pause, ["sleep", "2147483647"])):
            archive = b / f"{ref.rsplit('/', 1)[1].split(':')[0]}.tar"
            oci_archive(archive, ref, cmd)
            subprocess.run(["ctr", "--address", f"{b}/cri.sock", "-n", "k8s.io", "images", "import", str(archive)],
                           check=True, capture_output=True, timeout=120)
        return client

    def shim_pids(self, client: CRIClient) -> list[int]:
        assert self.proc is not None
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes()
                    if b"containerd-shim-runc-v2" in cmd and str(self.base).encode() in cmd:
                        out.append(int(p))
        # and each pod's pause process (a child of its shim), to match kubeletpy's infra
        return out + [c for s in out for c in children(s)
                      if b"sleep" in Path(f"/proc/{c}/cmdline").read_bytes()]

    def cleanup(self) -> None:
        unmount_under(self.base, also=[f"/{self.tag}"])
        super().cleanup()


def oci_archive(path: Path, ref: str, cmd: list[str]) -> None:
    """An OCI image-layout tarball of the host's busybox with `cmd`, for `ctr images import`."""
    layer = layer_tar("/bin/busybox")
    gz = gzip.compress(layer, mtime=0)

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_d, _ = blob(gz)
    config = json.dumps({"architecture": "amd64" if os.uname().machine == "x86_64" else "arm64", "os": "linux",
                         "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}
                        ).encode()
    config_d, _ = blob(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d,
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d,
                                       "size": len(gz)}]}).encode()
    manifest_d, _ = blob(manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d, "size": len(manifest),
         "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}]}
    ).encode()
    with tarfile.open(path, "w") as tf:
        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add("index.json", index)
        for d, data in ((layer_d, gz), (config_d, config), (manifest_d, manifest)):
            add(f"blobs/sha256/{d[7:]}", data)


def start_pod(t: Target, client: CRIClient, name: str) -> tuple[str, float]:
    cfg = t.pod_config(name)
    t0 = time.perf_counter()
    sid = client.run_pod(cfg)
    ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="sleep"), image=pb.ImageSpec(image=t.image),
                              command=["sleep", "3600"], log_path="sleep.log")
    cid = client.create_container(sid, ccfg, cfg)
    client.start_container(cid)
    return sid, (time.perf_counter() - t0) * 1000


def remove_all(client: CRIClient, threads: int = 8) -> None:
    pods = [p.id for p in client.list_pods()]

    def rm(sid: str) -> None:
        with contextlib.suppress(grpc.RpcError):
            client.stop_pod(sid)
        with contextlib.suppress(grpc.RpcError):
            client.remove_pod(sid)

    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(rm, pods))


def bench(t: Target, n: int, pods: int, threads: int) -> dict[str, Any]:
    client = t.start()
    try:
        start_pod(t, client, "warmup")   # first-use costs (image unpack, bridge creation) are not the metric
        remove_all(client)
        seq = []
        for i in range(n):
            sid, dt = start_pod(t, client, f"seq-{i}")
            seq.append(dt)
            client.stop_pod(sid)
            client.remove_pod(sid)
        print(f"  {t.name:10s} pod start (sequential):      {ms(seq)}", flush=True)
        clients = [CRIClient(t.endpoint, timeout=600) for _ in range(threads)]
        local = threading.local()
        ids = iter(range(pods))
        lock = threading.Lock()

        def one(i: int) -> float:
            if not hasattr(local, "c"):
                with lock:
                    local.c = clients.pop()
            return start_pod(t, local.c, f"par-{i}")[1]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as ex:
            lat = list(ex.map(one, ids))
        total = time.perf_counter() - t0
        running = len(client.list_containers(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)))
        assert t.proc is not None
        daemon = mem_kib([t.proc.pid])
        shims = mem_kib(t.shim_pids(client))
        print(f"  {t.name:10s} {pods} pods, {threads} clients: total {total:6.2f} s   p99 {p99(lat):7.1f} ms   "
              f"({running} running)", flush=True)
        print(f"  {t.name:10s} memory at {pods} pods: daemon RSS {daemon[0] / 1024:6.1f} MiB, shims+pause RSS "
              f"{shims[0] / 1024:6.1f} MiB (PSS: daemon {daemon[1] / 1024:.1f}, shims+pause {shims[1] / 1024:.1f} MiB)",
              flush=True)
        return {"seq_median": statistics.median(seq), "total": total, "p99": p99(lat),
                "rss_mib": (daemon[0] + shims[0]) / 1024, "pss_mib": (daemon[1] + shims[1]) / 1024}
    finally:
        with contextlib.suppress(Exception):
            remove_all(client)
        client.close()


@contextlib.contextmanager
def running(t: Target) -> Iterator[Target]:
    try:
        yield t
    finally:
        t.stop()
        t.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="sequential pod starts per runtime")
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--no-containerd", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_cri: run as root (namespaces, cgroups, netns)", file=sys.stderr)
        return 1
    taken: set[str] = set()
    results: dict[str, dict[str, Any]] = {}
    print(f"CRI pod start: RunPodSandbox(+CNI) + CreateContainer + StartContainer, busybox sleep "
          f"({os.cpu_count()} CPUs)")
    targets: list[Callable[[], Target]] = [
        lambda: Kubeletpy(Path(f"/tmp/kpb-k-{secrets.token_hex(3)}"), free_subnet(taken))]
    if not args.no_containerd:
        if Containerd.available():
            targets.append(lambda: Containerd(Path(f"/tmp/kpb-c-{secrets.token_hex(3)}"), free_subnet(taken)))
        else:
            print("  containerd: not installed (Debian package `containerd`), comparison skipped")
    for make in targets:
        with running(make()) as t:
            results[t.name] = bench(t, args.n, args.pods, args.threads)
    if "containerd" in results:
        k, c = results["kubeletpy"], results["containerd"]
        print(f"  ratio kubeletpy/containerd: pod start {k['seq_median'] / c['seq_median']:.2f}x (target <= 0.3x), "
              f"{args.pods} pods total {k['total'] / c['total']:.2f}x, p99 {k['p99'] / c['p99']:.2f}x, "
              f"memory RSS {k['rss_mib'] / c['rss_mib']:.2f}x, PSS {k['pss_mib'] / c['pss_mib']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
