"""A whole single-node cluster on temporary directories, for the agent's end-to-end tests
and bench: control plane, CRI runtime daemon and agent as real subprocesses.

Other engineers test on this host at the same time, so everything is unique: free
127.0.0.1 ports, a tmp CRI socket, a tmp CNI conf/bin/cache/IPAM dir with a random bridge
name and subnet, a random cgroup root. `Cluster.close()` stops every process it started
(by pid) and then proves the host is clean: no mounts under the base dir, no netns, no
bridge/veth links of ours, no cgroups under our root, no processes with our paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = "/usr/bin/kubectl"
BUSYBOX = "kubeletpy.local/busybox:latest"
CGROUP_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "cpu,cpuacct", "blkio", "devices", "freezer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Cluster:
    def __init__(self, base: Path, *, agent_args: list[str] | None = None) -> None:
        self.base = base
        self.tag = secrets.token_hex(3)
        self.node = f"node-{self.tag}"
        self.bridge = f"kpa{self.tag}"
        self.cgroup_root = f"kpagent-{self.tag}"
        self.cluster_cidr = f"10.{random_octet()}.0.0/16"
        self.subnet = ""  # this node's pod CIDR, from the control plane's node IPAM
        self.api_port = free_port()
        self.agent_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kubeconfig = base / "admin.kubeconfig"
        self.sock = base / "run" / "cri.sock"
        self.manifests = base / "manifests"
        self.agent_args = agent_args or []
        # filesystems a test mounted under `base` for this cluster (e.g. a small image fs as the
        # runtime's state root): unmounted by close() once the processes are gone, so a busy one
        # (a pod's overlay still on it) shows up as a leftover instead of being hidden
        self.own_mounts: list[Path] = []
        for d in ("cp", "state", "run", "logs", "podlogs", "agent", "manifests", "cni/net.d", "cni/bin",
                  "cni/cache", "cni/ipam", "daemons"):
            (base / d).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.base / "daemons" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen([sys.executable, "-m", "kubeletpy", *args], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        log.close()
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        p = self.base / "daemons" / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def start_controlplane(self) -> None:
        self._spawn("control-plane", ["control-plane", "--listen", f"127.0.0.1:{self.api_port}", "--data-dir",
                                      str(self.base / "cp"), "--kubeconfig", str(self.kubeconfig),
                                      "--cluster-cidr", self.cluster_cidr, "--node-cidr-mask-size", "24"])
        wait_for(lambda: self.kubeconfig.exists() and self._port_open(self.api_port), 30, "the API server")

    def start_runtime(self) -> None:
        from cni.install import install_plugins
        from cri.images import ImageStore

        install_plugins(self.base / "cni" / "bin", names="both")
        ImageStore(root=str(self.base / "state")).build_busybox()
        self._spawn("runtime", ["runtime", "--socket", f"unix://{self.sock}", "--root", str(self.base / "state"),
                                "--run-root", str(self.base / "run"), "--log-root", str(self.base / "logs"),
                                "--cni-conf-dir", str(self.base / "cni/net.d"),
                                "--cni-bin-dir", str(self.base / "cni/bin"),
                                "--cni-cache-dir", str(self.base / "cni/cache"),
                                "--cni-bridge", self.bridge, "--cni-data-dir", str(self.base / "cni/ipam"),
                                "--cgroup-parent", f"{self.cgroup_root}/default"])
        wait_for(self.sock.exists, 30, "the CRI socket")

    def join_token(self) -> str:
        return (self.base / "cp" / "join-token").read_text().strip()

    def start_agent(self, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
        args = ["agent", "--server", f"https://127.0.0.1:{self.api_port}", "--token", self.join_token(),
                "--node-name", self.node, "--node-ip", "127.0.0.1", "--cri", f"unix://{self.sock}",
                "--root-dir", str(self.base / "agent"), "--pod-log-dir", str(self.base / "podlogs"),
                "--manifests-dir", str(self.manifests), "--cgroup-root", f"{self.cgroup_root}/kubepods",
                "--port", str(self.agent_port), "--resync", "2", "--backoff", "2,8,600", "--gc-period", "5",
                *self.agent_args, *(extra or [])]
        return self._spawn("agent", args)

    def restart_agent(self) -> None:
        """Start a new agent after the old one was killed; it reuses its node credential."""
        self.start_agent()
        wait_for(lambda: self._port_open(self.agent_port), 30, "the agent's HTTPS port")

    def assign_pod_cidr(self) -> None:
        """Node IPAM (in the control plane) gives the node its pod CIDR from our unique
        cluster CIDR; the agent hands it to the runtime, which writes the CNI config."""
        wait_for(lambda: self.kubectl("get", "node", self.node, check=False).returncode == 0, 30, "node registration")
        self.subnet = wait_for(lambda: ((self.get("node", self.node, "") or {}).get("spec") or {}).get("podCIDR"),
                               30, "the node's pod CIDR")
        wait_for(lambda: self.node_ready(), 30, "node Ready")
        wait_for(lambda: any(self.subnet in p.read_text() for p in (self.base / "cni/net.d").glob("*")), 30,
                 "the CNI config for the pod CIDR")

    def tmpfs(self, sub: str, mib: int, first: bool = False) -> Path:
        """A tmpfs of `mib` MiB on <base>/<sub> (e.g. a small filesystem for one of the
        daemons' roots), unmounted by close() after the processes are gone -- `first`: last."""
        path = self.base / sub
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0755", f"kpa-{sub}-{self.tag}", str(path)],
                       check=True)
        if first:
            self.own_mounts.insert(0, path)
        else:
            self.own_mounts.append(path)
        return path

    def start(self) -> Cluster:
        # The runtime's run root on a tmpfs, as /run/kubeletpy is on a real node: its sockets,
        # netns mount points and per-pod run dirs never touch the disk.
        self.tmpfs("run", 64, first=True)
        self.start_controlplane()
        self.start_runtime()
        self.start_agent()
        self.assign_pod_cidr()
        return self

    @staticmethod
    def _port_open(port: int) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        return False

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.get(name)
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    # ------------------------------------------------------------------ kubectl

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], capture_output=True, text=True,
                           input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {r.stderr}")
        return r

    def apply(self, manifest: str | dict[str, Any]) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def get(self, kind: str, name: str, ns: str = "default") -> dict[str, Any] | None:
        r = self.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def pod(self, name: str, ns: str = "default") -> dict[str, Any]:
        p = self.get("pod", name, ns)
        assert p is not None, f"pod {name} not found"
        return p

    def node_ready(self) -> bool:
        n = self.get("node", self.node, "")
        conds = {c["type"]: c["status"] for c in ((n or {}).get("status") or {}).get("conditions") or []}
        return conds.get("Ready") == "True"

    def wait_pod(self, name: str, pred: Any, timeout: float = 60, what: str = "", ns: str = "default") -> dict:
        return wait_for(lambda: (p := self.get("pod", name, ns)) and pred(p) and p, timeout,
                        what or f"pod {name}", interval=0.2)

    @staticmethod
    def ready(p: dict[str, Any]) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions")
                   or [])

    def admin_token(self) -> str:
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        return str(cfg["users"][0]["user"]["token"])

    # ------------------------------------------------------------------ cleanup

    def close(self, *, remove_pods: bool = True) -> list[str]:
        """Stop everything; return a list of leftovers (empty when the host is clean)."""
        if remove_pods and "agent" in self.procs and self.procs["agent"].poll() is None:
            for f in self.manifests.iterdir():  # static pods go when their manifest goes
                f.unlink()
            with contextlib.suppress(Exception):
                self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false",
                             check=False, timeout=30)
                wait_for(lambda: not self._sandboxes(), 60, "all sandboxes removed", interval=0.3)
        for name in ("agent", "runtime", "control-plane"):
            self.kill(name, signal.SIGTERM)
        for m in reversed(self.own_mounts):
            subprocess.run(["umount", str(m)], capture_output=True)
        leftovers = self.leftovers()
        if leftovers:
            self._force_clean()
        return leftovers

    def _sandboxes(self) -> list[str]:
        d = self.base / "state" / "sandboxes"
        return [p.name for p in d.iterdir()] if d.exists() else []

    def _our_pids(self) -> list[int]:
        out = []
        needle = str(self.base).encode()
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{d}/cmdline").read_bytes():
                    out.append(int(d))
        return out

    def _mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if str(self.base) in line.split()[4]]

    def _cgroups(self) -> list[str]:
        out = []
        for ctrl in CGROUP_CONTROLLERS:
            d = Path("/sys/fs/cgroup") / ctrl / self.cgroup_root
            if d.is_dir():
                out.append(str(d))
        d2 = Path("/sys/fs/cgroup") / self.cgroup_root
        if (Path("/sys/fs/cgroup") / "cgroup.controllers").exists() and d2.is_dir():
            out.append(str(d2))
        return out

    def _links(self) -> list[str]:
        r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
        return [ln.split(":")[1].strip() for ln in r.stdout.splitlines() if self.bridge in ln]

    def _cgroup_pids(self) -> list[int]:
        out: set[int] = set()
        for c in self._cgroups():
            for dirpath, _, files in os.walk(c):
                if "cgroup.procs" in files:
                    with contextlib.suppress(OSError, ValueError):
                        out |= {int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()}
        return sorted(out)

    def _shim_pids(self) -> list[int]:
        out = []
        for rec in (self.base / "state" / "sandboxes").glob("*/sandbox.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                out.append(int(json.loads(rec.read_text())["shim_pid"]))
        return out

    def _force_clean(self) -> None:
        """Last resort after a failure (reported by `leftovers`, not hidden): kill what this
        cluster started -- processes naming our base dir, the pods' shims, and whatever runs in
        our cgroups -- so a failed run never leaves pods behind on a shared host."""
        for pid in self._our_pids() + self._shim_pids() + self._cgroup_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def leftovers(self) -> list[str]:
        left = [f"process {p}" for p in self._our_pids()]
        left += [f"process {p} in our cgroups" for p in self._cgroup_pids()]
        left += [f"mount {m}" for m in self._mounts()]
        # the QoS parents (kubepods/burstable ...) are node-level; the pod cgroups under them must be gone
        for c in self._cgroups():
            for dirpath, dirnames, _ in os.walk(c):
                left += [f"cgroup {dirpath}/{d}" for d in dirnames if d.startswith("pod")]
        left += [f"link {link}" for link in self._links() if link != self.bridge]
        left += [f"nft chain {' '.join(c)}" for c in self._nft_chains()]
        return left

    def _nft_chains(self) -> list[tuple[str, str, str]]:
        """(family, table, chain) of nftables chains whose rules mention our pod subnet (the
        CNI plugins' masquerade/portmap rules; a clean run has none left)."""
        if not self.subnet:
            return []
        r = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
        try:
            items = json.loads(r.stdout).get("nftables", [])
        except ValueError:
            return []
        prefix = self.subnet.rsplit(".", 1)[0] + "."
        out = set()
        for it in items:
            rule = it.get("rule")
            if rule and prefix in json.dumps(rule.get("expr")):
                out.add((rule["family"], rule["table"], rule["chain"]))
        return sorted(out)

    def purge(self) -> None:
        """Remove node-level leftovers that outlive pods by design (the bridge, the QoS cgroup
        parents) and, after a forced cleanup, the CNI rules of our subnet."""
        for family, table, chain in self._nft_chains():
            subprocess.run(["nft", "flush", "chain", family, table, chain], capture_output=True)
            subprocess.run(["nft", "delete", "chain", family, table, chain], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        for c in self._cgroups():
            for dirpath, _, _ in sorted(os.walk(c), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
        for m in sorted(self._mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def random_octet() -> int:
    return 100 + secrets.randbelow(150)
