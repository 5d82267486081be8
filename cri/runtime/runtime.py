"""The runtime: pod sandboxes and containers, driven through per-pod shims.

State lives on disk, never only in this process: records under
<root>/sandboxes and <root>/containers (atomic writes), plus process.json and
exit.json that the shim writes itself. A container's state is derived from
those files and from liveness checks on every query, so a new Runtime instance
after a crash (kill -9) sees exactly what is running and what exited meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import selectors
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cri import fsutil
from cri.cgroups import CgroupError, CgroupManager, Resources, new_manager
from cri.runtime import spec as S
from cri.runtime.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound
from cri.runtime.events import ContainerEventType, EventHub, ExitWatcher
from cri.runtime.shimclient import (
    ExecProcess,
    ExecStartError,
    ShimError,
    ShimGone,
    ShimLauncher,
    call,
    call_recv_fds,
    send,
    start_exec,
)
from cri.runtime.state import from_dict, to_dict
from cri.runtime.types import (
    ContainerConfig,
    ContainerMetadata,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    LinuxContainerResources,
    NamespaceMode,
    NamespaceOption,
    NetworkResult,
    PodSandboxConfig,
    PodSandboxState,
    PodSandboxStatus,
    ProfileType,
    SecurityProfile,
)
from cri.shim import linux as L
from kubeletpy.paths import POD_LOG_ROOT, RUN_ROOT, STATE_ROOT

NetworkHook = Callable[[str, str, PodSandboxConfig], "NetworkResult | str | None"]
TeardownHook = Callable[[str, str, PodSandboxConfig], None]

_ID_LEN = 64


def _write_record(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomic + fsync'd (cri.fsutil), but compact JSON: indent forces the pure-Python encoder (~1 ms a record)."""
    fsutil.atomic_write_bytes(path, json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def _selected(st: Any, state: Any, label_selector: dict[str, str] | None) -> bool:
    """The List* filters shared by sandboxes and containers: state, then every selector label."""
    if state is not None and st.state != state:
        return False
    return not label_selector or all(st.labels.get(k) == v for k, v in label_selector.items())


def _now() -> int:
    return time.time_ns()




def _alive(pid: int, start_time: int) -> bool:
    """Same process as recorded? (pid plus start time survives pid reuse; zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return False
    return not start_time or int(rest[19]) == start_time


def _resources(r: LinuxContainerResources | None) -> Resources:
    if r is None:
        return Resources()
    for name in ("cpu_period", "cpu_shares", "memory_limit_in_bytes", "pids_limit",
                 "memory_swap_limit_in_bytes"):
        if getattr(r, name) < 0:
            raise InvalidArgument(f"resources.{name} must not be negative (got {getattr(r, name)})")
    res = Resources(cpu_shares=r.cpu_shares, cpu_quota=r.cpu_quota, cpu_period=r.cpu_period,
                    memory_limit=r.memory_limit_in_bytes, pids_limit=r.pids_limit)
    try:
        res.validate()
    except ValueError as e:
        raise InvalidArgument(f"resources: {e}") from None
    return res


def _signal_number(name: str | None) -> int:
    if not name:
        return signal.SIGTERM
    n = name.strip().upper()
    if n.isdigit():
        return int(n)
    if not n.startswith("SIG"):
        n = "SIG" + n
    try:
        return int(signal.Signals[n])
    except KeyError:
        return signal.SIGTERM


class Runtime:
    """Public API, CRI-shaped. Thread-safe; several instances may share a root (one at a time is normal)."""

    def __init__(self, root: str | os.PathLike[str] = STATE_ROOT, run_root: str | os.PathLike[str] = RUN_ROOT,
                 log_root: str | os.PathLike[str] = POD_LOG_ROOT, *, cgroup_parent: str = "kubeletpy",
                 cgroup_root: str = "/sys/fs/cgroup", cgroup_version: int | None = None,
                 image_store: Any = None, snapshotter: Any = None,
                 network_setup: NetworkHook | None = None, network_teardown: TeardownHook | None = None,
                 prewarm_shim: bool = True, warm_children: bool = True) -> None:
        self.root, self.run_root, self.log_root = Path(root), Path(run_root), Path(log_root)
        self.cgroup_parent = cgroup_parent.strip("/")
        self.cgroup_root, self.cgroup_version = cgroup_root, cgroup_version
        self.network_setup, self.network_teardown = network_setup, network_teardown
        self.warm_children = warm_children  # each shim keeps a child forked ahead (spawn.warm_child)
        for d in (self.root / "sandboxes", self.root / "containers", self.run_root / "netns",
                  self.run_root / "shims", self.run_root / "sandboxes", self.root / "seccomp"):
            d.mkdir(parents=True, exist_ok=True)
        if image_store is None:
            from cri.images import ImageStore
            image_store = ImageStore(root=self.root)
        if snapshotter is None:
            from cri.images.snapshot import Snapshotter
            snapshotter = Snapshotter(root=self.root, store=image_store)
        self.images, self.snapshots = image_store, snapshotter
        self._lock = threading.RLock()
        self._starting: set[str] = set()
        self._sb_locks: dict[str, threading.RLock] = {}
        self._pod_configs: dict[tuple[str, int], PodSandboxConfig] = {}
        self._ctr_configs: dict[tuple[str, int], ContainerConfig] = {}
        self._json = fsutil.JsonCache()  # records, process.json, exit.json: see JsonCache for why
        self._users: dict[tuple[str, str], tuple[int, int, list[int], str]] = {}
        self._bounding = S.own_bounding_set()
        self._last_cap = S.last_cap()
        self.shims = ShimLauncher(str(self.run_root / "shims" / "shim.log"), prewarm=prewarm_shim)
        self._gc_incomplete()
        self.events = EventHub()  # GetContainerEvents (see cri/runtime/events.py)
        self._pod_ctrs: dict[str, set[str]] = {}  # sandbox id -> its containers' ids (pod_containers)
        self._exits = ExitWatcher(self._on_exit)
        self._arm_exit_watches()

    def _gc_incomplete(self, min_age: float = 60.0) -> None:
        """Undo creations a crashed runtime left half-done (a dir without its record).

        Only dirs older than `min_age` seconds: a younger one may belong to a
        create in progress in another runtime instance sharing this root.
        """
        now = time.time()
        for cid in self._ids("containers"):
            d = self._ctr_dir(cid)
            if (d / "container.json").exists() or now - d.stat().st_mtime < min_age:
                continue
            with contextlib.suppress(Exception):
                self.snapshots.remove(cid)
            shutil.rmtree(d, ignore_errors=True)
        for sid in self._ids("sandboxes"):
            d = self._sb_dir(sid)
            if (d / "sandbox.json").exists() or now - d.stat().st_mtime < min_age:
                continue
            shim = fsutil.read_json(d / "shim.json") or {}
            self._kill_shim(shim.get("pid", 0), shim.get("infra_pid", 0), sid,
                            (shim.get("start_time", 0), shim.get("infra_start_time", 0)))
            run_dir = self.run_root / "sandboxes" / sid
            for path in (str(self.run_root / "netns" / sid), str(run_dir / "shm")):
                with contextlib.suppress(OSError):
                    L.umount(path, L.MNT_DETACH)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.run_root / "netns" / sid)
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        """Release the spare shim. Running pods are untouched (their shims live on)."""
        self._exits.close()
        self.shims.close()

    # ---- events ------------------------------------------------------------------------------
    def _arm_exit_watches(self) -> None:
        """Watch what still runs from before this instance: ready sandboxes' infra, running containers."""
        for sid in self._ids("sandboxes"):
            rec = self._json.read(self._sb_dir(sid) / "sandbox.json")
            if rec and rec.get("state") == "ready":
                self._exits.watch(f"s:{sid}", rec.get("infra_pid", 0), rec.get("infra_start_time", 0))
        for cid in self._ids("containers"):
            d = self._ctr_dir(cid)
            rec = self._json.read(d / "container.json")
            if rec:
                self._pod_ctrs.setdefault(rec["sandbox_id"], set()).add(cid)
            proc = self._json.read(d / "process.json")
            if proc and not (d / "exit.json").exists():
                self._exits.watch(f"c:{cid}", proc.get("pid", 0), proc.get("start_time", 0))

    def _on_exit(self, key: str) -> None:
        """An infra or container process ended (ExitWatcher's thread): publish STOPPED once the
        shim has recorded the exit status, so a subscriber that asks for it finds it."""
        kind, ident = key.split(":", 1)
        threading.Thread(target=self._publish_exit, args=(kind, ident), name="exit-event", daemon=True).start()

    def _publish_exit(self, kind: str, ident: str) -> None:
        if kind == "s":
            self.events.publish(ident, ContainerEventType.STOPPED, ident)
            return
        d = self._ctr_dir(ident)
        deadline = time.monotonic() + 2.0
        while not (d / "exit.json").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        rec = self._json.read(d / "container.json")
        if rec is not None:
            self.events.publish(ident, ContainerEventType.STOPPED, rec["sandbox_id"])

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- paths and records -----------------------------------------------------------------
    def _sb_dir(self, sid: str) -> Path:
        return self.root / "sandboxes" / sid

    def _ctr_dir(self, cid: str) -> Path:
        return self.root / "containers" / cid

    def _sock(self, sid: str) -> str:
        return str(self.run_root / "shims" / f"{sid}.sock")

    def _cg(self, path: str) -> CgroupManager:
        return new_manager(path, self.cgroup_root, self.cgroup_version)

    def _load_sb(self, sid: str) -> dict:
        sid = self._resolve_id(sid, "sandboxes")
        rec = self._json.read(self._sb_dir(sid) / "sandbox.json")
        if rec is None:
            raise NotFound(f"pod sandbox {sid!r} not found")
        return rec

    def _load_ctr(self, cid: str) -> dict:
        cid = self._resolve_id(cid, "containers")
        rec = self._json.read(self._ctr_dir(cid) / "container.json")
        if rec is None:
            raise NotFound(f"container {cid!r} not found")
        return rec

    def _resolve_id(self, ident: str, kind: str) -> str:
        """Full ids, or unique prefixes like crictl accepts."""
        what = "pod sandbox" if kind == "sandboxes" else "container"
        if not ident or not all(c in "0123456789abcdef" for c in ident):
            raise NotFound(f"{what} {ident!r} not found")
        if len(ident) == _ID_LEN:
            return ident
        hits = [n for n in os.listdir(self.root / kind) if n.startswith(ident)]
        if len(hits) != 1:
            raise NotFound(f"{what} {ident!r} not found" if not hits else f"{what} id prefix {ident!r} is ambiguous")
        return hits[0]

    def _ids(self, kind: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root / kind) if len(n) == _ID_LEN)
        except FileNotFoundError:
            return []

    def _pod_config(self, sb: dict) -> PodSandboxConfig:
        """The sandbox's config as a dataclass (read-only use). A sandbox's config never changes
        after creation, so the conversion (~70 µs, on every container create and sandbox status)
        is kept per (id, created_at); remove_pod_sandbox drops it."""
        return self._decoded(self._pod_configs, sb, PodSandboxConfig, 1024)

    def _ctr_config(self, rec: dict) -> ContainerConfig:
        """The container's config as a dataclass (read-only use), kept like _pod_config: converting
        it was most of a ListContainers (the agent relists); remove_container drops it."""
        return self._decoded(self._ctr_configs, rec, ContainerConfig, 4096)

    def _decoded(self, cache: dict[tuple[str, int], Any], rec: dict, cls: type, limit: int) -> Any:
        key = (rec["id"], rec["created_at"])
        cfg = cache.get(key)
        if cfg is None:
            cfg = from_dict(cls, rec["config"])
            with self._lock:
                if len(cache) >= limit:
                    cache.clear()
                cache[key] = cfg
        return cfg

    def _sb_lock(self, sandbox_id: str) -> threading.RLock:
        """Per-pod lock: create/remove/stop within one pod are ordered; other pods never wait."""
        sid = self._resolve_id(sandbox_id, "sandboxes")
        with self._lock:
            lock = self._sb_locks.get(sid)
            if lock is None:
                lock = self._sb_locks[sid] = threading.RLock()
            return lock

    # ---- name reservations ---------------------------------------------------------------
    # One file per CRI name, created with O_EXCL: an O(1) clash check that also holds
    # across runtime instances sharing the root (the kubelet retries creates after timeouts).
    def _name_file(self, kind: str, key: str) -> Path:
        return self.root / "names" / kind / hashlib.sha256(key.encode()).hexdigest()

    def _name_owner(self, kind: str, key: str) -> str:
        """The id holding `key`, or "" (a reservation whose object is gone is stale)."""
        try:
            owner = self._name_file(kind, key).read_text().strip()
        except FileNotFoundError:
            return ""
        record = "sandbox.json" if kind == "sandboxes" else "container.json"
        d = self.root / kind / owner
        if (d / record).exists() or (d.exists() and time.time() - d.stat().st_mtime < 60):
            return owner  # a live object, or one being created right now
        return ""

    def _reserve_name(self, kind: str, key: str, ident: str, what: str) -> None:
        path = self._name_file(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                owner = self._name_owner(kind, key)
                if owner:
                    raise AlreadyExists(f"{what} name {key!r} is reserved for {owner}", owner) from None
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: left by a crash between reserve and record
                continue
            with os.fdopen(fd, "w") as f:
                f.write(ident)
            return
        raise AlreadyExists(f"{what} name {key!r} is being reserved concurrently")

    def _release_name(self, kind: str, key: str, ident: str) -> None:
        path = self._name_file(kind, key)
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == ident:
                path.unlink()

    # ---- sandboxes -------------------------------------------------------------------------
    def run_pod_sandbox(self, config: PodSandboxConfig, runtime_handler: str = "",
                        network_setup: NetworkHook | None = None) -> str:
        """Namespaces + infra + pod cgroup + per-pod files; then the network hook on the netns path."""
        md = config.metadata
        if not md.name or not md.namespace or not md.uid:
            raise InvalidArgument("pod sandbox metadata needs name, namespace and uid")
        sc = config.linux.security_context
        ns = sc.namespace_options or NamespaceOption()
        net_mode, pid_mode, ipc_mode = (S.namespace_mode(ns.network), S.namespace_mode(ns.pid),
                                        S.namespace_mode(ns.ipc))
        host_net, host_ipc = net_mode == NamespaceMode.NODE, ipc_mode == NamespaceMode.NODE
        for k, v in config.linux.sysctls.items():
            S.check_sysctl(k, v, host_net, host_ipc)
        pod_res = _resources(config.linux.resources)
        hostname = config.hostname or md.name
        if not host_net and (len(hostname) > 64 or not all(c.isalnum() or c in "-." for c in hostname)):
            raise InvalidArgument(f"invalid hostname {hostname!r}")
        name_key = f"{md.name}_{md.namespace}_{md.uid}_{md.attempt}"
        # No global lock: the name reservation is atomic on disk, and nobody else can
        # address this sandbox before we return its id. CNI may take a while; other
        # pods shouldn't wait for it.
        sid = secrets.token_hex(32)
        self._reserve_name("sandboxes", name_key, sid, "pod sandbox")
        undo: list[Callable[[], None]] = [lambda: self._release_name("sandboxes", name_key, sid)]
        try:
            self._run_sandbox(sid, config, runtime_handler, network_setup or self.network_setup,
                              name_key, hostname, net_mode, pid_mode, ipc_mode, pod_res, undo)
        except BaseException:
            for fn in reversed(undo):
                with contextlib.suppress(Exception):
                    fn()
            raise
        rec = self._json.read(self._sb_dir(sid) / "sandbox.json") or {}
        self._exits.watch(f"s:{sid}", rec.get("infra_pid", 0), rec.get("infra_start_time", 0))
        self.events.publish(sid, ContainerEventType.CREATED, sid)  # as containerd: created, then started
        self.events.publish(sid, ContainerEventType.STARTED, sid)
        return sid

    def _run_sandbox(self, sid: str, config: PodSandboxConfig, handler: str, hook: NetworkHook | None,
                     name_key: str, hostname: str, net_mode: NamespaceMode, pid_mode: NamespaceMode,
                     ipc_mode: NamespaceMode, pod_res: Resources, undo: list[Callable[[], None]]) -> str:
        md = config.metadata
        host_net, host_ipc = net_mode == NamespaceMode.NODE, ipc_mode == NamespaceMode.NODE
        sb_dir, run_dir = self._sb_dir(sid), self.run_root / "sandboxes" / sid
        undo.append(lambda: shutil.rmtree(sb_dir, ignore_errors=True))
        undo.append(lambda: shutil.rmtree(run_dir, ignore_errors=True))
        sb_dir.mkdir(parents=True)
        run_dir.mkdir(parents=True)
        self._write_etc_files(sb_dir, config, hostname, host_net)
        shm = ""
        if not host_ipc:
            shm = str(run_dir / "shm")
            os.mkdir(shm)
            L.mount("shm", shm, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=1777,size=65536k")
            undo.append(lambda: L.umount(shm, L.MNT_DETACH))
        pod_cg = (config.linux.cgroup_parent.strip("/") or f"{self.cgroup_parent}/pod{md.uid}")
        pod_mgr, infra_mgr = self._cg(pod_cg), self._cg(f"{pod_cg}/{sid}")
        try:
            existed = pod_mgr.exists()
            pod_mgr.create()
            if not existed:
                undo.append(lambda: pod_mgr.destroy(1.0))
            pod_mgr.apply(pod_res)
            infra_mgr.create()
            undo.append(lambda: infra_mgr.destroy(2.0))
        except CgroupError as e:
            raise Internal(str(e)) from None
        cfg = {"id": sid, "socket": self._sock(sid), "state_dir": str(sb_dir), "hostname": hostname,
               "net_ns": "host" if host_net else "pod", "ipc_ns": "host" if host_ipc else "pod",
               "uts_ns": "host" if host_net else "pod", "pid_ns": "pod" if pid_mode == NamespaceMode.POD else "",
               "cgroup_join": infra_mgr.join_files(), "warm": self.warm_children}
        try:
            ready = self.shims.launch(cfg)
        except ShimError as e:
            raise Internal(f"starting the pod shim: {e}") from None
        shim_pid, infra_pid = ready["pid"], ready["infra_pid"]
        undo.append(lambda: self._kill_shim(shim_pid, infra_pid, sid))
        netns = ""
        if not host_net:
            netns = str(self.run_root / "netns" / sid)
            os.close(os.open(netns, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o444))
            undo.append(lambda: os.unlink(netns))
            L.mount(f"/proc/{infra_pid}/ns/net", netns, None, L.MS_BIND)
            undo.append(lambda: L.umount(netns, L.MNT_DETACH))
        rec = {"id": sid, "name_key": name_key, "config": to_dict(config), "created_at": _now(),
               "state": "ready", "runtime_handler": handler, "netns": netns, "shm": shm,
               "hostname": hostname, "pod_cgroup": pod_cg, "pod_cgroup_created": not existed,
               "infra_cgroup": f"{pod_cg}/{sid}", "shim_pid": shim_pid, "infra_pid": infra_pid,
               "shim_start_time": L.start_time(shim_pid), "infra_start_time": L.start_time(infra_pid),
               "ns": {"network": int(net_mode), "pid": int(pid_mode), "ipc": int(ipc_mode)},
               "ip": "", "additional_ips": []}
        if hook is not None and netns:
            # Record first: if we crash inside the hook, a later remove still finds what to undo.
            _write_record(sb_dir / "sandbox.json", rec)
            teardown = self.network_teardown
            if teardown is not None:  # a half-done CNI ADD is undone with DEL, as containerd does
                undo.append(lambda: teardown(sid, netns, config))
            try:
                result = hook(sid, netns, config)
            except Exception as e:
                raise Internal(f"network setup for pod sandbox {sid}: {e}") from e
            if isinstance(result, NetworkResult):
                rec["ip"], rec["additional_ips"] = result.ip, list(result.additional_ips)
            elif isinstance(result, str):
                rec["ip"] = result
        _write_record(sb_dir / "sandbox.json", rec)
        return sid

    def _write_etc_files(self, d: Path, config: PodSandboxConfig, hostname: str, host_net: bool) -> None:
        """Per-pod /etc/hosts, /etc/hostname, /etc/resolv.conf (host copies for host-network pods)."""
        if host_net:
            for name in ("hosts", "hostname"):
                try:
                    shutil.copyfile(f"/etc/{name}", d / name)
                except OSError:
                    (d / name).write_text("")
        else:
            (d / "hostname").write_text(hostname + "\n")
            (d / "hosts").write_text("# Kubernetes-managed hosts file (kubeletpy).\n127.0.0.1\tlocalhost\n"
                                     "::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
                                     "fe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
                                     f"127.0.1.1\t{hostname}\n")
        dns = config.dns_config
        if dns is not None and (dns.servers or dns.searches or dns.options):
            lines = [f"nameserver {s}" for s in dns.servers]
            if dns.searches:
                lines.append("search " + " ".join(dns.searches))
            if dns.options:
                lines.append("options " + " ".join(dns.options))
            (d / "resolv.conf").write_text("\n".join(lines) + "\n")
        else:
            try:
                shutil.copyfile("/etc/resolv.conf", d / "resolv.conf")
            except OSError:
                (d / "resolv.conf").write_text("")

    def _kill_shim(self, shim_pid: int, infra_pid: int, sid: str, start_times: tuple[int, int] = (0, 0)) -> None:
        with contextlib.suppress(ShimError, TimeoutError, OSError):
            call(self._sock(sid), {"op": "shutdown"}, timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (_alive(shim_pid, start_times[0]) or
                                               _alive(infra_pid, start_times[1])):
            time.sleep(0.005)
        for pid, st in ((infra_pid, start_times[1]), (shim_pid, start_times[0])):
            if _alive(pid, st):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._sock(sid))

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        """Kill the pod's containers and infra, tear down network; records and cgroups stay until remove."""
        with self._sb_lock(sandbox_id):
            rec = self._load_sb(sandbox_id)
            sid = rec["id"]
            for cid in self._ids("containers"):
                c = self._json.read(self._ctr_dir(cid) / "container.json")
                if c and c["sandbox_id"] == sid:
                    self._stop(c, 0)
            config = from_dict(PodSandboxConfig, rec["config"])
            if rec.get("netns") and self.network_teardown is not None and rec["state"] == "ready":
                try:
                    self.network_teardown(sid, rec["netns"], config)
                except Exception as e:
                    raise Internal(f"network teardown for pod sandbox {sid}: {e}") from e
            self._kill_shim(rec["shim_pid"], rec["infra_pid"], sid,
                            (rec.get("shim_start_time", 0), rec.get("infra_start_time", 0)))
            for path in (rec.get("netns"), rec.get("shm")):
                if path and os.path.exists(path):
                    with contextlib.suppress(OSError):
                        L.umount(path, L.MNT_DETACH)
            if rec.get("netns"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(rec["netns"])
            rec["state"] = "notready"
            _write_record(self._sb_dir(sid) / "sandbox.json", rec)

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """Idempotent: a missing sandbox is not an error (CRI semantics)."""
        try:
            lock = self._sb_lock(sandbox_id)
        except NotFound:
            return
        with lock:
            try:
                rec = self._load_sb(sandbox_id)
            except NotFound:
                return
            sid = rec["id"]
            self.stop_pod_sandbox(sid)
            for cid in self._ids("containers"):
                c = self._json.read(self._ctr_dir(cid) / "container.json")
                if c and c["sandbox_id"] == sid:
                    self.remove_container(cid)
            errors = []
            for path, created in ((rec["infra_cgroup"], True), (rec["pod_cgroup"], rec.get("pod_cgroup_created"))):
                if created:
                    try:
                        self._cg(path).destroy()
                    except CgroupError as e:
                        errors.append(str(e))
            shutil.rmtree(self.run_root / "sandboxes" / sid, ignore_errors=True)
            shutil.rmtree(self._sb_dir(sid), ignore_errors=True)
            self._json.forget(self._sb_dir(sid))
            self._exits.forget(f"s:{sid}")
            with self._lock:
                self._pod_ctrs.pop(sid, None)
            self._release_name("sandboxes", rec["name_key"], sid)
            self.events.publish(sid, ContainerEventType.DELETED, sid)
            with self._lock:
                self._sb_locks.pop(sid, None)
                self._pod_configs.pop((sid, rec["created_at"]), None)
            if errors:
                raise Internal("; ".join(errors))

    def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus:
        return self._sb_status(self._load_sb(sandbox_id))

    def _sb_status(self, rec: dict) -> PodSandboxStatus:
        config = self._pod_config(rec)
        ready = rec["state"] == "ready" and _alive(rec["infra_pid"], rec.get("infra_start_time", 0))
        ns = rec["ns"]
        return PodSandboxStatus(
            id=rec["id"], metadata=config.metadata, created_at=rec["created_at"],
            state=PodSandboxState.SANDBOX_READY if ready else PodSandboxState.SANDBOX_NOTREADY,
            ip=rec.get("ip", ""), additional_ips=rec.get("additional_ips", []),
            namespace_options=NamespaceOption(NamespaceMode(ns["network"]), NamespaceMode(ns["pid"]),
                                              NamespaceMode(ns["ipc"])),
            netns_path=rec.get("netns", ""), labels=config.labels, annotations=config.annotations,
            runtime_handler=rec.get("runtime_handler", ""), infra_pid=rec["infra_pid"],
            shim_pid=rec["shim_pid"], cgroup_parent=rec["pod_cgroup"])

    def list_pod_sandboxes(self, id: str = "", state: PodSandboxState | None = None,
                           label_selector: dict[str, str] | None = None) -> list[PodSandboxStatus]:
        out = []
        for sid in self._ids("sandboxes"):
            if id and not sid.startswith(id):
                continue
            rec = self._json.read(self._sb_dir(sid) / "sandbox.json")
            if rec is None:
                continue
            st = self._sb_status(rec)
            if _selected(st, state, label_selector):
                out.append(st)
        return out

    # ---- containers ------------------------------------------------------------------------
    def create_container(self, sandbox_id: str, config: ContainerConfig,
                         sandbox_config: PodSandboxConfig | None = None) -> str:
        if not config.metadata.name:
            raise InvalidArgument("container metadata needs a name")
        with self._sb_lock(sandbox_id):
            sb = self._load_sb(sandbox_id)
            sid = sb["id"]
            if sb["state"] != "ready" or not _alive(sb["infra_pid"], sb.get("infra_start_time", 0)):
                raise FailedPrecondition(f"pod sandbox {sid} is not ready")
            pod = self._pod_config(sb)
            name_key = f"{config.metadata.name}_{pod.metadata.name}_{pod.metadata.namespace}_" \
                       f"{pod.metadata.uid}_{config.metadata.attempt}"
            existing = self._name_owner("containers", name_key)
            if existing:
                raise AlreadyExists(f"container name {name_key!r} is reserved for {existing}", existing)
            res = _resources(config.linux.resources)
            for m in config.mounts:
                S.validate_mount(m)
            image_ref = config.image.image if config.image else ""
            if not image_ref:
                raise InvalidArgument("container config needs an image")
            from cri.images import ImageError, ImageNotFound
            try:
                img = self.images.get(image_ref)
            except ImageNotFound as e:
                raise NotFound(str(e)) from None
            except ImageError as e:
                raise InvalidArgument(str(e)) from None
            cid = secrets.token_hex(32)
            self._reserve_name("containers", name_key, cid, "container")
            undo: list[Callable[[], None]] = [lambda: self._release_name("containers", name_key, cid)]
            try:
                self._create(cid, sb, pod, config, img, res, name_key, undo)
            except BaseException:
                for fn in reversed(undo):
                    with contextlib.suppress(Exception):
                        fn()
                raise
            with self._lock:
                self._pod_ctrs.setdefault(sb["id"], set()).add(cid)
            self.events.publish(cid, ContainerEventType.CREATED, sb["id"])
            return cid

    def _create(self, cid: str, sb: dict, pod: PodSandboxConfig, config: ContainerConfig, img: Any,
                res: Resources, name_key: str, undo: list[Callable[[], None]]) -> None:
        sid = sb["id"]
        image_cfg = (img.config or {}).get("config") or {}
        argv = S.resolve_args(config, image_cfg)
        env = S.resolve_env(config, image_cfg)
        lsc = config.linux.security_context
        psc = pod.linux.security_context
        ns = lsc.namespace_options or psc.namespace_options or NamespaceOption()
        net_mode = NamespaceMode(sb["ns"]["network"])
        ipc_mode = NamespaceMode(sb["ns"]["ipc"])
        pid_mode = S.namespace_mode(ns.pid)
        host_net, host_ipc = net_mode == NamespaceMode.NODE, ipc_mode == NamespaceMode.NODE
        sysctls = dict(pod.linux.sysctls)
        for k, v in sysctls.items():
            S.check_sysctl(k, v, host_net, host_ipc)
        privileged = lsc.privileged
        if privileged and not psc.privileged:
            raise InvalidArgument("a privileged container needs a privileged pod sandbox")
        caps = lsc.capabilities
        capset = S.capabilities(privileged, caps.add_capabilities if caps else [],
                                caps.drop_capabilities if caps else [])
        ambient = {S._cap_name(c) for c in (caps.add_ambient_capabilities if caps else [])} - {"ALL"}
        # Prepare the filesystem only after every cheap check passed: bad input leaves nothing.
        seccomp_bpf = self._seccomp_bpf(lsc, capset, privileged)
        cdir = self._ctr_dir(cid)
        cdir.mkdir(parents=True)
        undo.append(lambda: shutil.rmtree(cdir, ignore_errors=True))
        try:
            rootfs = str(self.snapshots.prepare(cid, img))
        except Exception as e:
            raise Internal(f"preparing the rootfs: {e}") from None
        undo.append(lambda: self.snapshots.remove(cid))
        run_as_user = lsc.run_as_user.value if lsc.run_as_user is not None else None
        run_as_group = lsc.run_as_group.value if lsc.run_as_group is not None else None
        uid, gid, groups, home = self._resolve_user(
            img.id, rootfs, image_cfg.get("User", ""), run_as_user, lsc.run_as_username, run_as_group,
            list(psc.supplemental_groups) + list(lsc.supplemental_groups))
        if not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={home}")
        cwd = config.working_dir or image_cfg.get("WorkingDir") or "/"
        if not cwd.startswith("/"):
            raise InvalidArgument(f"working_dir must be absolute, got {cwd!r}")
        mounts, devices = S.base_mounts(privileged, sb.get("shm", ""), host_ipc)
        sb_dir = self._sb_dir(sid)
        for name in ("hosts", "resolv.conf", "hostname"):
            if not any(m.container_path == f"/etc/{name}" for m in config.mounts):
                mounts.append({"dest": f"/etc/{name}", "type": "bind", "source": str(sb_dir / name)})
        mounts += S.user_mounts(config.mounts, str(sb_dir / "volumes"))
        masked = [] if privileged else S.existing(lsc.masked_paths if lsc.masked_paths is not None
                                                  else S.MASKED_PATHS)
        ro_paths = [] if privileged else (lsc.readonly_paths if lsc.readonly_paths is not None
                                          else S.READONLY_PATHS)
        cg_path = f"{sb['pod_cgroup']}/{cid}"
        mgr = self._cg(cg_path)
        infra = sb["infra_pid"]
        join = {}
        if not host_net:
            join["net"] = sb["netns"]
            join["uts"] = f"/proc/{infra}/ns/uts"
        if not host_ipc:
            join["ipc"] = f"/proc/{infra}/ns/ipc"
        if pid_mode == NamespaceMode.NODE:
            pid_ns: str | None = "host"
        elif pid_mode == NamespaceMode.POD:
            if NamespaceMode(sb["ns"]["pid"]) != NamespaceMode.POD:
                raise InvalidArgument("container asks for the pod PID namespace, but the sandbox has none")
            pid_ns = f"/proc/{infra}/ns/pid"
        elif pid_mode == NamespaceMode.TARGET:
            target = self.container_status(ns.target_id)
            if target.state != ContainerState.CONTAINER_RUNNING:
                raise FailedPrecondition(f"target container {ns.target_id} is not running")
            pid_ns = f"/proc/{target.pid}/ns/pid"
        else:
            pid_ns = None
        effective = S.cap_mask(capset) & self._bounding
        log_path = self._log_path(pod, config)
        spec = {
            "id": cid, "rootfs": rootfs, "state_dir": str(cdir), "log_path": log_path,
            "join": join, "unshare": [], "pid_ns": pid_ns, "cgroup_procs": mgr.procs_files(), "cgroup_join": mgr.join_files(),
            "oom_file": mgr.oom_file(), "mounts": mounts, "devices": devices,
            "stdin": bool(config.stdin), "stdin_once": bool(config.stdin_once), "tty": bool(config.tty),
            "symlinks": [] if privileged else S.SYMLINKS, "masked_paths": masked,
            "readonly_paths": ro_paths, "readonly_rootfs": lsc.readonly_rootfs, "sysctls": sysctls,
            "oom_score_adj": config.linux.resources.oom_score_adj if config.linux.resources and
            config.linux.resources.oom_score_adj else None,
            "process": {"args": argv, "env": env, "cwd": cwd, "uid": uid, "gid": gid, "groups": groups,
                        "caps": effective, "ambient": S.cap_mask(ambient & capset) & effective,
                        "last_cap": self._last_cap, "no_new_privs": bool(lsc.no_new_privs),
                        "seccomp_bpf": seccomp_bpf},
        }
        stop_signal = image_cfg.get("StopSignal") or ""
        created_at = _now()
        # Staged first: the shim's child builds the container while we make its cgroups (it joins
        # them once they exist, at the latest at start) and write the record.
        forget = self._stage(sid, spec, undo)

        def destroy_cgroup() -> None:
            forget()  # a staged child may have joined it already
            mgr.destroy(2.0)
        try:
            mgr.create()
            undo.append(destroy_cgroup)
            mgr.apply(res)
        except CgroupError as e:
            raise InvalidArgument(str(e)) if e.cause and isinstance(e.cause, OSError) and \
                e.cause.errno == errno.EINVAL else Internal(str(e)) from None
        rec = {"id": cid, "sandbox_id": sid, "name_key": name_key, "config": to_dict(config),
               "created_at": created_at, "image": config.image.image, "image_ref": img.id,
               "log_path": log_path, "cgroup": cg_path, "stop_signal": stop_signal,
               "resources": to_dict(config.linux.resources) if config.linux.resources else None,
               "spec": spec}
        _write_record(cdir / "container.json", rec)  # the commit point: one fsync'd write

    def _stage(self, sid: str, spec: dict, undo: list[Callable[[], None]]) -> Callable[[], None]:
        """Have the pod's shim build this container in its warm child now (Shim.op_prepare), while
        we make the record durable and until start_container: start then only has to hand over
        stdio and let it execve. Not waited for, and optional: if the shim can't (an older shim,
        another kind of PID namespace, no warm child yet), start does all the work as before.
        Returns what kills the staged child (idempotent; also put on `undo`)."""
        sock = self._sock(sid)
        try:
            send(sock, {"op": "prepare", "spec": spec})
        except (ShimError, TimeoutError, OSError):
            return lambda: None

        # A failed create must not leave a staged child in the container's cgroup and rootfs;
        # "forget" kills it. (A crash here leaves it to the shim, which ends it with the pod.)
        def forget() -> None:
            with contextlib.suppress(ShimError, TimeoutError):
                call(sock, {"op": "forget", "id": spec["id"]}, timeout=5)
        undo.append(forget)
        return forget

    def _resolve_user(self, image_id: str, rootfs: str, *args: Any) -> tuple[int, int, list[int], str]:
        """S.resolve_user, remembered per image: a fresh snapshot's /etc/passwd and /etc/group are
        the image's own (layers are immutable and the image ID is their digest), so the answer
        for the same image and security context never changes. Errors are not remembered."""
        key = (image_id, repr(args))
        hit = self._users.get(key)
        if hit is None:
            hit = S.resolve_user(rootfs, *args)
            with self._lock:
                if len(self._users) >= 1024:
                    self._users.clear()
                self._users[key] = hit
        uid, gid, groups, home = hit
        return uid, gid, list(groups), home

    def _log_path(self, pod: PodSandboxConfig, config: ContainerConfig) -> str:
        if config.log_path:
            if os.path.isabs(config.log_path):
                return config.log_path
            base = pod.log_directory or str(self.log_root / f"{pod.metadata.namespace}_{pod.metadata.name}_"
                                                             f"{pod.metadata.uid}")
            return os.path.join(base, config.log_path)
        base = pod.log_directory or str(self.log_root / f"{pod.metadata.namespace}_{pod.metadata.name}_"
                                                         f"{pod.metadata.uid}")
        return os.path.join(base, config.metadata.name, f"{config.metadata.attempt}.log")

    def _seccomp_bpf(self, lsc: Any, caps: set[str], privileged: bool) -> str | None:
        """Compile once per (profile, caps) and cache on disk; None = unconfined."""
        if privileged:
            return None
        from cri.seccomp import SeccompError, compile_profile, resolve_profile
        prof: SecurityProfile | None = lsc.seccomp
        try:
            if prof is not None:
                profile = resolve_profile(int(prof.profile_type), prof.localhost_ref)
            elif lsc.seccomp_profile_path:
                profile = resolve_profile(lsc.seccomp_profile_path)
            else:
                # CRI: an unset profile means unconfined (the kubelet sends RuntimeDefault explicitly).
                profile = resolve_profile(int(ProfileType.Unconfined))
        except ValueError as e:
            raise InvalidArgument(f"seccomp: {e}") from None
        if profile is None:
            return None
        key = hashlib.sha256(json.dumps([profile, sorted(caps)], sort_keys=True).encode()).hexdigest()
        path = self.root / "seccomp" / f"{key}.bpf"
        if not path.exists():
            try:
                bpf = compile_profile(profile, {f"CAP_{c}" for c in caps})
            except (SeccompError, ValueError, KeyError, TypeError) as e:
                raise InvalidArgument(f"seccomp profile: {e}") from None
            fsutil.atomic_write_bytes(path, bpf, 0o600)
        return str(path)

    def start_container(self, container_id: str) -> None:
        # The global lock covers the state check only: a start can take long (a
        # slow hostPath mount) and must not block other pods. `_starting` keeps
        # two concurrent starts of one container apart.
        with self._lock:
            rec = self._load_ctr(container_id)
            cid = rec["id"]
            if cid in self._starting:
                raise FailedPrecondition(f"container {cid} is already being started")
            st = self._ctr_state(rec)
            if st["state"] != ContainerState.CONTAINER_CREATED:
                raise FailedPrecondition(f"container {cid} is {ContainerState(st['state']).name}, not CREATED")
            sb = self._load_sb(rec["sandbox_id"])
            if sb["state"] != "ready":
                raise FailedPrecondition(f"pod sandbox {sb['id']} is not ready")
            self._starting.add(cid)
        try:
            reply = call(self._sock(sb["id"]), {"op": "spawn", "spec": rec["spec"]}, timeout=60)
        except ShimGone as e:
            raise FailedPrecondition(f"pod sandbox {sb['id']} has no running shim: {e}") from None
        except (ShimError, TimeoutError) as e:
            raise Internal(f"starting container {cid}: {e}") from None
        finally:
            with self._lock:
                self._starting.discard(cid)
        if "error" in reply:
            if reply.get("start_error"):
                raise FailedPrecondition(f"failed to start container {cid}: {reply['error']}")
            raise Internal(f"starting container {cid}: {reply['error']}")
        self.events.publish(cid, ContainerEventType.STARTED, sb["id"])
        proc = self._json.read(self._ctr_dir(cid) / "process.json") or {}
        self._exits.watch(f"c:{cid}", proc.get("pid", 0), proc.get("start_time", 0))

    def _ctr_state(self, rec: dict) -> dict:
        """State from the files the shim writes, checked against the live processes."""
        d = self._ctr_dir(rec["id"])
        exit_info = self._json.read(d / "exit.json")
        proc = self._json.read(d / "process.json")
        if exit_info is not None:
            return {"state": ContainerState.CONTAINER_EXITED, "proc": proc or {}, **exit_info}
        if proc is None:
            return {"state": ContainerState.CONTAINER_CREATED, "proc": {}}
        if _alive(proc["pid"], proc.get("start_time", 0)):
            return {"state": ContainerState.CONTAINER_RUNNING, "proc": proc}
        # Gone without exit.json: if its shim lives, it is reaping and writing it right now.
        sb = self._json.read(self._sb_dir(rec["sandbox_id"]) / "sandbox.json") or {}
        deadline = time.monotonic() + 2.0
        while _alive(sb.get("shim_pid", 0), sb.get("shim_start_time", 0)) and time.monotonic() < deadline:
            exit_info = self._json.read(d / "exit.json")
            if exit_info is not None:
                return {"state": ContainerState.CONTAINER_EXITED, "proc": proc, **exit_info}
            time.sleep(0.001)
        exit_info = self._json.read(d / "exit.json")
        if exit_info is not None:
            return {"state": ContainerState.CONTAINER_EXITED, "proc": proc, **exit_info}
        return {"state": ContainerState.CONTAINER_EXITED, "proc": proc, "exit_code": 255,
                "finished_at": 0, "reason": "Unknown",
                "message": "the container's shim died; its exit status was lost"}

    def container_status(self, container_id: str) -> ContainerStatus:
        return self._ctr_status(self._load_ctr(container_id))

    def _ctr_status(self, rec: dict) -> ContainerStatus:
        config = self._ctr_config(rec)
        st = self._ctr_state(rec)
        proc = st.get("proc") or {}
        running = st["state"] == ContainerState.CONTAINER_RUNNING
        return ContainerStatus(
            id=rec["id"], pod_sandbox_id=rec["sandbox_id"], metadata=config.metadata or ContainerMetadata(),
            state=st["state"], created_at=rec["created_at"], started_at=proc.get("started_at", 0),
            finished_at=st.get("finished_at", 0), exit_code=st.get("exit_code", 0),
            image=rec["image"], image_ref=rec["image_ref"], reason=st.get("reason", ""),
            message=st.get("message", ""), labels=config.labels, annotations=config.annotations,
            mounts=config.mounts, log_path=rec["log_path"], pid=proc.get("pid", 0) if running else 0,
            resources=from_dict(LinuxContainerResources, rec["resources"]) if rec.get("resources") else None)

    def pod_containers(self, sandbox_id: str) -> list[ContainerStatus]:
        """The statuses of one pod's containers without listing every container on the node
        (an event carries them; at 250 pods a full list per event would dominate)."""
        with self._lock:
            ids = sorted(self._pod_ctrs.get(sandbox_id, ()))
        out = []
        for cid in ids:
            rec = self._json.read(self._ctr_dir(cid) / "container.json")
            if rec is not None:
                out.append(self._ctr_status(rec))
        return out

    def list_containers(self, id: str = "", pod_sandbox_id: str = "", state: ContainerState | None = None,
                        label_selector: dict[str, str] | None = None) -> list[ContainerStatus]:
        out = []
        for cid in self._ids("containers"):
            if id and not cid.startswith(id):
                continue
            rec = self._json.read(self._ctr_dir(cid) / "container.json")
            if rec is None or (pod_sandbox_id and not rec["sandbox_id"].startswith(pod_sandbox_id)):
                continue
            st = self._ctr_status(rec)
            if _selected(st, state, label_selector):
                out.append(st)
        return out

    def stop_container(self, container_id: str, timeout: float = 10) -> None:
        """Stop signal (image StopSignal or SIGTERM), `timeout` seconds grace, then SIGKILL everything."""
        rec = self._load_ctr(container_id)
        self._stop(rec, timeout)

    def _stop(self, rec: dict, timeout: float) -> None:
        st = self._ctr_state(rec)
        if st["state"] != ContainerState.CONTAINER_RUNNING:
            return
        cid, sock = rec["id"], self._sock(rec["sandbox_id"])
        proc = st["proc"]
        sig = _signal_number(rec.get("stop_signal"))
        try:
            if timeout > 0:
                call(sock, {"op": "kill", "id": cid, "signal": sig}, timeout=10)
                with contextlib.suppress(TimeoutError):
                    call(sock, {"op": "wait", "id": cid}, timeout=timeout)
            if self._ctr_state(rec)["state"] == ContainerState.CONTAINER_RUNNING:
                call(sock, {"op": "kill", "id": cid, "signal": int(signal.SIGKILL), "all": True}, timeout=10)
                call(sock, {"op": "wait", "id": cid}, timeout=30)
        except ShimGone:
            # No shim (it was killed): signal directly; nobody will record an exit code.
            if _alive(proc["pid"], proc.get("start_time", 0)):
                os.kill(proc["pid"], signal.SIGKILL)
            for pid in self._cg(rec["cgroup"]).pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(proc["pid"], proc.get("start_time", 0)) and time.monotonic() < deadline:
                time.sleep(0.01)
        except (ShimError, TimeoutError) as e:
            raise Internal(f"stopping container {cid}: {e}") from None

    def remove_container(self, container_id: str) -> None:
        """Force-removes a running container (CRI semantics); a missing one is not an error."""
        try:
            rec = self._load_ctr(container_id)
        except NotFound:
            return
        try:
            lock = self._sb_lock(rec["sandbox_id"])
        except NotFound:
            lock = self._lock  # type: ignore[assignment]  # the pod record is gone already
        with lock:
            try:
                rec = self._load_ctr(container_id)
            except NotFound:
                return
            cid = rec["id"]
            self._stop(rec, 0)
            with contextlib.suppress(ShimError, TimeoutError):
                call(self._sock(rec["sandbox_id"]), {"op": "forget", "id": cid}, timeout=5)
            errors = []
            try:
                self.snapshots.remove(cid)
            except Exception as e:
                errors.append(f"rootfs: {e}")
            try:
                self._cg(rec["cgroup"]).destroy()
            except CgroupError as e:
                errors.append(str(e))
            if errors:
                raise Internal(f"removing container {cid}: " + "; ".join(errors))
            shutil.rmtree(self._ctr_dir(cid), ignore_errors=True)
            self._json.forget(self._ctr_dir(cid))
            self._exits.forget(f"c:{cid}")
            with self._lock:
                self._pod_ctrs.get(rec["sandbox_id"], set()).discard(cid)
            self._release_name("containers", rec["name_key"], cid)
            self.events.publish(cid, ContainerEventType.DELETED, rec["sandbox_id"])
            with self._lock:
                self._ctr_configs.pop((cid, rec["created_at"]), None)

    # ---- exec, stats, resources, logs --------------------------------------------------------
    def _running(self, container_id: str) -> tuple[dict, dict]:
        rec = self._load_ctr(container_id)
        st = self._ctr_state(rec)
        if st["state"] != ContainerState.CONTAINER_RUNNING:
            raise FailedPrecondition(f"container {rec['id']} is not running")
        return rec, st

    def exec(self, container_id: str, cmd: list[str], stdio: tuple[int, int, int],
             timeout: float = 0) -> ExecProcess:
        """Start `cmd` in the container with the caller's fds as stdio; the building block of streaming exec."""
        if not cmd:
            raise InvalidArgument("exec needs a command")
        rec, _ = self._running(container_id)
        try:
            return start_exec(self._sock(rec["sandbox_id"]), rec["id"], {"args": list(cmd)}, stdio, timeout)
        except ShimGone as e:
            raise FailedPrecondition(str(e)) from None

    def exec_sync(self, container_id: str, cmd: list[str], timeout: float = 0) -> ExecResult:
        """Run to completion; output is captured. A command that cannot be executed gives exit code 126/127."""
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                p = self.exec(container_id, cmd, (null, out_w, err_w), timeout)
            except ExecStartError as e:
                return ExecResult(b"", str(e).encode() + b"\n", 127 if "not found" in str(e) else 126)
            finally:
                for fd in (null, out_w, err_w):
                    os.close(fd)
                null = out_w = err_w = -1
            bufs: dict[int, bytearray] = {out_r: bytearray(), err_r: bytearray()}
            open_fds = {out_r, err_r}
            done = False
            with selectors.DefaultSelector() as sel:  # epoll: a gRPC server's fds can exceed select()'s 1024
                for fd in (p.fileno(), out_r, err_r):
                    sel.register(fd, selectors.EVENT_READ)
                while not done:
                    for key, _ in sel.select():
                        fd = key.fd
                        if fd == p.fileno():
                            done = True
                            continue
                        chunk = os.read(fd, 65536)
                        if chunk:
                            bufs[fd] += chunk
                        else:
                            open_fds.discard(fd)
                            sel.unregister(fd)
            code = p.wait()
            for fd in list(open_fds):  # what is already in the pipe; don't wait for daemonized children
                os.set_blocking(fd, False)
                with contextlib.suppress(BlockingIOError):
                    while chunk := os.read(fd, 65536):
                        bufs[fd] += chunk
            return ExecResult(bytes(bufs[out_r]), bytes(bufs[err_r]), code, p.timed_out)
        finally:
            for fd in (out_r, err_r):
                os.close(fd)

    def _cgroup_stats(self, obj_id: str, cgroup: str) -> ContainerStats:
        try:
            st = self._cg(cgroup).stats()
        except CgroupError as e:
            raise Internal(str(e)) from None
        return ContainerStats(id=obj_id, timestamp=_now(), cpu_usage_core_nano_seconds=st.cpu_usage_ns,
                              memory_working_set_bytes=st.memory_working_set_bytes,
                              memory_usage_bytes=st.memory_usage_bytes, pids=st.pids,
                              cpu_nr_throttled=st.cpu_nr_throttled)

    def container_stats(self, container_id: str) -> ContainerStats:
        rec = self._load_ctr(container_id)
        return self._cgroup_stats(rec["id"], rec["cgroup"])

    def pod_sandbox_stats(self, sandbox_id: str) -> ContainerStats:
        """The pod cgroup's usage: every container of the pod plus the infra."""
        rec = self._load_sb(sandbox_id)
        return self._cgroup_stats(rec["id"], rec["pod_cgroup"])

    def list_container_stats(self, pod_sandbox_id: str = "") -> list[ContainerStats]:
        return [self.container_stats(c.id) for c in self.list_containers(pod_sandbox_id=pod_sandbox_id)
                if c.state == ContainerState.CONTAINER_RUNNING]

    def update_container_resources(self, container_id: str, resources: LinuxContainerResources) -> None:
        with self._lock:
            rec = self._load_ctr(container_id)
            res = _resources(resources)
            try:
                self._cg(rec["cgroup"]).apply(res)
            except CgroupError as e:
                raise InvalidArgument(str(e)) from None
            rec["resources"] = to_dict(resources)
            _write_record(self._ctr_dir(rec["id"]) / "container.json", rec)

    def attach_stdin(self, container_id: str) -> tuple[int, bool]:
        """→ (fd writing to the container's stdin, is it a tty). The caller owns and closes the fd.

        For a stdin_once container the first caller gets the only write end: closing
        it gives the container EOF, and later attaches fail, as CRI specifies.
        """
        rec, _ = self._running(container_id)
        spec = rec["spec"]
        if not spec.get("stdin"):
            raise FailedPrecondition(f"container {rec['id']} was not created with stdin")
        try:
            reply, fds = call_recv_fds(self._sock(rec["sandbox_id"]),
                                       {"op": "attach", "id": rec["id"], "once": bool(spec.get("stdin_once"))})
        except ShimError as e:
            raise FailedPrecondition(str(e)) from None
        if "error" in reply or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise FailedPrecondition(reply.get("error", "the shim sent no stdin"))
        return fds[0], bool(reply.get("tty"))

    def resize_container_tty(self, container_id: str, rows: int, cols: int) -> None:
        rec, _ = self._running(container_id)
        if not rec["spec"].get("tty"):
            raise FailedPrecondition(f"container {rec['id']} has no tty")
        if not (0 < rows < 65536 and 0 < cols < 65536):
            raise InvalidArgument(f"invalid terminal size {rows}x{cols}")
        try:
            reply = call(self._sock(rec["sandbox_id"]), {"op": "resize", "id": rec["id"], "rows": rows,
                                                          "cols": cols}, timeout=10)
        except ShimError as e:
            raise FailedPrecondition(str(e)) from None
        if "error" in reply:
            raise FailedPrecondition(reply["error"])

    def reopen_container_log(self, container_id: str) -> None:
        rec, _ = self._running(container_id)
        try:
            reply = call(self._sock(rec["sandbox_id"]), {"op": "reopen_log", "id": rec["id"]}, timeout=10)
        except ShimError as e:
            raise FailedPrecondition(str(e)) from None
        if "error" in reply:
            raise Internal(reply["error"])
