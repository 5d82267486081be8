"""`kubeletpy up|down|status`: the single-node cluster on this host.

`up` is a tiny supervisor: each component (control plane, runtime, agent) runs as
its own background process with a pid file under the run root and a log under
/var/log/kubeletpy, so killing or restarting one never disturbs the others or the
pods. Running `up` again starts only what is not running. Components whose code
has not landed yet are reported as such instead of being faked.

`up --foreground` keeps the same components as children of the `up` process (one
process tree, for a terminal, a systemd `Type=simple` unit or a container's
entrypoint): it restarts a component that dies, with back-off, and on SIGINT or
SIGTERM stops them in reverse order. Pods keep running, as they do when the
kubelet and containerd are stopped; `kubeletpy down` removes them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubeletpy import paths


@dataclass
class Component:
    name: str
    module: str                     # present once the component's code has landed
    argv: list[str]
    port: int | None = None         # TCP port that answers once it is up
    socket_path: Path | None = None  # or a unix socket that appears once it is up
    env: dict[str, str] = field(default_factory=dict)

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


@dataclass
class ClusterLayout:
    """Every host path and name the cluster uses; all overridable so a test can run a
    throw-away cluster beside a real one."""

    state_root: Path
    run_root: Path
    log_dir: Path
    pod_log_dir: Path
    etc_dir: Path
    kubeconfig: Path
    listen_port: int
    agent_port: int
    node_name: str
    cni_conf_dir: Path
    cni_bin_dir: Path
    cni_state_dir: Path
    cni_bridge: str
    cluster_cidr: str
    cgroup_parent: str   # the runtime's default parent for pods without one
    cgroup_root: str     # the agent's QoS hierarchy root (kubepods)

    def pid_file(self, name: str) -> Path:
        return self.run_root / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @property
    def cp_data_dir(self) -> Path:
        return self.state_root / "controlplane"

    @property
    def cri_socket(self) -> Path:
        return self.run_root / "cri.sock"

    @property
    def node_kubeconfig(self) -> Path:
        return self.state_root / "agent" / "node.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.listen_port}"


def _components(layout: ClusterLayout) -> list[Component]:
    lo = layout
    return [
        Component(
            "control-plane",
            "kubeletpy.cli.controlplane",
            ["control-plane", "--listen", f"0.0.0.0:{lo.listen_port}", "--data-dir", str(lo.cp_data_dir),
             "--kubeconfig", str(lo.kubeconfig), "--cluster-cidr", lo.cluster_cidr],
            port=lo.listen_port,
        ),
        Component(
            "runtime",
            "kubeletpy.cli.runtime",
            ["runtime", "--root", str(lo.state_root), "--run-root", str(lo.run_root),
             "--socket", f"unix://{lo.cri_socket}", "--log-root", str(lo.pod_log_dir),
             "--cni-conf-dir", str(lo.cni_conf_dir), "--cni-bin-dir", f"{lo.cni_bin_dir}:/usr/lib/cni",
             "--cni-cache-dir", str(lo.cni_state_dir / "results"),
             "--cni-data-dir", str(lo.cni_state_dir / "networks"),
             "--cni-bridge", lo.cni_bridge, "--cgroup-parent", lo.cgroup_parent],
            socket_path=lo.cri_socket,
        ),
        Component(
            "agent",
            "kubeletpy.cli.agent",
            ["agent", "--kubeconfig", str(lo.node_kubeconfig), "--node-name", lo.node_name,
             "--cri", f"unix://{lo.cri_socket}", "--root-dir", str(lo.state_root / "agent"),
             "--pod-log-dir", str(lo.pod_log_dir), "--manifests-dir", str(lo.etc_dir / "manifests"),
             "--cgroup-root", lo.cgroup_root, "--port", str(lo.agent_port)],
        ),
    ]


def register(parser: argparse.ArgumentParser, name: str) -> None:
    a = parser.add_argument
    a("--root", type=Path, default=paths.STATE_ROOT, help="state root (default %(default)s)")
    a("--run-root", type=Path, default=paths.RUN_ROOT, help="pid files and sockets (default %(default)s)")
    a("--log-dir", type=Path, default=paths.DAEMON_LOG_ROOT, help="daemon logs (default %(default)s)")
    a("--pod-log-dir", type=Path, default=paths.POD_LOG_ROOT, help="container logs (default %(default)s)")
    a("--etc-dir", type=Path, default=paths.ETC_ROOT, help="config: manifests/ (default %(default)s)")
    a("--kubeconfig", type=Path, default=None, help="admin kubeconfig (default <etc-dir>/admin.kubeconfig)")
    a("--port", type=int, default=6443, help="API server port (default %(default)s)")
    a("--agent-port", type=int, default=10250, help="the agent's HTTPS port (default %(default)s)")
    a("--node-name", default=socket.gethostname(), help="this node's name (default: the hostname)")
    a("--cni-conf-dir", type=Path, default=paths.CNI_CONF_DIR, help="(default %(default)s)")
    a("--cni-bin-dir", type=Path, default=paths.CNI_BIN_DIR, help="where our CNI plugins go (default %(default)s)")
    a("--cni-state-dir", type=Path, default=paths.CNI_STATE_DIR, help="leases and results (default %(default)s)")
    a("--cni-bridge", default="kpbr0", help="the pod bridge (default %(default)s)")
    a("--cluster-cidr", default="10.244.0.0/16", help="pod CIDR range (default %(default)s)")
    a("--cgroup-parent", default="kubeletpy", help="runtime's default pod cgroup parent (default %(default)s)")
    a("--cgroup-root", default="kubepods", help="agent's QoS cgroup root (default %(default)s)")
    if name == "up":
        a("--timeout", type=float, default=90.0, help="seconds to wait for each component and the node")
        a("--foreground", action="store_true",
          help="keep the components as this process's children: restart them if they die, stop them on "
               "Ctrl-C/SIGTERM (pods keep running)")
        parser.set_defaults(func=cmd_up)
    elif name == "down":
        a("--purge", action="store_true", help="also delete state, certificates and CNI config")
        parser.set_defaults(func=cmd_down)
    else:
        parser.set_defaults(func=cmd_status)


def _layout(args: argparse.Namespace) -> ClusterLayout:
    return ClusterLayout(
        state_root=args.root, run_root=args.run_root, log_dir=args.log_dir, pod_log_dir=args.pod_log_dir,
        etc_dir=args.etc_dir, kubeconfig=args.kubeconfig or args.etc_dir / "admin.kubeconfig",
        listen_port=args.port, agent_port=args.agent_port, node_name=args.node_name,
        cni_conf_dir=args.cni_conf_dir, cni_bin_dir=args.cni_bin_dir, cni_state_dir=args.cni_state_dir,
        cni_bridge=args.cni_bridge, cluster_cidr=args.cluster_cidr, cgroup_parent=args.cgroup_parent,
        cgroup_root=args.cgroup_root)


def running_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is alive and is a kubeletpy process."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if b"kubeletpy" in cmdline else None


def _answers(c: Component) -> bool:
    if c.port is not None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", c.port), timeout=0.5):
            return True
        return False
    if c.socket_path is not None:
        # A connect, not just the file: a runtime killed with -9 leaves its socket file behind.
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(c.socket_path))
            return True
        return False
    return True


def _start(c: Component, layout: ClusterLayout, foreground: bool = False) -> subprocess.Popen[bytes]:
    layout.run_root.mkdir(parents=True, exist_ok=True)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    log = open(layout.log_file(c.name), "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeletpy", *c.argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Background: a session of its own survives this CLI and its terminal. Foreground:
        # still our child, but in its own process group, so a terminal's Ctrl-C reaches only
        # us and we stop the components in order.
        start_new_session=not foreground,
        process_group=0 if foreground else None,
        env={**os.environ, **c.env},
        close_fds=True,
    )
    log.close()
    layout.pid_file(c.name).write_text(f"{proc.pid}\n")
    return proc


def _prepare_node(layout: ClusterLayout) -> None:
    """Host pieces every component expects: CNI plugins on disk, the local demo image."""
    from cni.install import install_plugins
    from cri.images import ImageNotFound, ImageStore

    written = install_plugins(layout.cni_bin_dir)
    print(f"{'cni plugins':14} installed into {layout.cni_bin_dir} ({len(written)} wrappers)")
    store = ImageStore(root=layout.state_root)
    try:
        img = store.get("kubeletpy.local/busybox:latest")
        print(f"{'image':14} kubeletpy.local/busybox:latest present ({img.id[:19]})")
    except ImageNotFound:
        img = store.build_busybox()
        print(f"{'image':14} built kubeletpy.local/busybox:latest ({img.id[:19]}) from the host's busybox")


def _join_node(layout: ClusterLayout) -> None:
    """Exchange the control plane's join token for this node's own credential (kept 0600),
    so no token ever appears on a command line."""
    from cri.fsutil import atomic_write_bytes
    from kubeletpy.controlplane.join import join_node

    join_token = (layout.cp_data_dir / "join-token").read_text().strip()
    ca = (layout.cp_data_dir / "pki" / "ca.crt").read_bytes()
    text = join_node(layout.server, join_token, layout.node_name, ca)
    atomic_write_bytes(layout.node_kubeconfig, text.encode(), mode=0o600)


def _api_get(layout: ClusterLayout, path: str) -> dict | None:
    """GET with the admin kubeconfig (CA-verified); None when the server cannot answer yet."""
    import base64
    import json
    import ssl
    import urllib.request

    import yaml

    try:
        cfg = yaml.safe_load(layout.kubeconfig.read_text())
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        req = urllib.request.Request(cluster["server"] + path, headers={"Authorization": f"Bearer {user['token']}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _node_ready(layout: ClusterLayout) -> bool:
    node = _api_get(layout, f"/api/v1/nodes/{layout.node_name}") or {}
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _wait_answering(c: Component, proc: subprocess.Popen[bytes], layout: ClusterLayout, timeout: float,
                    stop: _StopRequest | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while not _answers(c):
        if stop is not None and stop.requested:
            print(f"{c.name:14} start interrupted", file=sys.stderr)
            return False
        # We are its parent: poll() is the authority on whether it is still alive.
        rc = proc.poll()
        if rc is not None or time.monotonic() > deadline:
            why = f"exited with status {rc}" if rc is not None else f"not answering after {timeout:.0f}s"
            print(f"{c.name:14} FAILED to start ({why}); see {layout.log_file(c.name)}", file=sys.stderr)
            return False
        time.sleep(0.1)
    return True


def cmd_up(args: argparse.Namespace) -> int:
    layout = _layout(args)
    foreground = bool(getattr(args, "foreground", False))
    stop = _StopRequest() if foreground else None
    if foreground:
        other = running_pid(layout.pid_file("up"))
        if other is not None and other != os.getpid():
            print(f"`kubeletpy up --foreground` already supervises this cluster (pid {other})", file=sys.stderr)
            return 1
        layout.run_root.mkdir(parents=True, exist_ok=True)
        layout.pid_file("up").write_text(f"{os.getpid()}\n")  # so `down` can stop us first
    try:
        return _up(args, layout, foreground, stop)
    finally:
        if foreground:
            with contextlib.suppress(FileNotFoundError):
                if layout.pid_file("up").read_text().strip() == str(os.getpid()):
                    layout.pid_file("up").unlink()


def _up(args: argparse.Namespace, layout: ClusterLayout, foreground: bool, stop: _StopRequest | None) -> int:
    _prepare_node(layout)
    started_any = False
    children: dict[str, tuple[Component, subprocess.Popen[bytes]]] = {}
    for c in _components(layout):
        if not c.available():
            print(f"{c.name:14} not installed yet (its code has not landed) — skipped")
            continue
        pid = running_pid(layout.pid_file(c.name))
        if pid is not None:
            print(f"{c.name:14} already running (pid {pid})")
            continue
        if c.name == "agent":
            _join_node(layout)
        proc = _start(c, layout, foreground)
        started_any = True
        children[c.name] = (c, proc)
        if not _wait_answering(c, proc, layout, args.timeout, stop):
            if foreground:  # nobody would supervise what we already started
                _stop_children(children, layout)
            return 1
        print(f"{c.name:14} started (pid {proc.pid}, log {layout.log_file(c.name)})")
    if not all(c.available() for c in _components(layout)):
        return _supervise(children, layout, stop) if stop is not None else 0
    deadline = time.monotonic() + args.timeout
    while not _node_ready(layout):
        if time.monotonic() > deadline or (stop is not None and stop.requested):
            print(f"node {layout.node_name} did not become Ready in {args.timeout:.0f}s; "
                  f"see {layout.log_dir}/*.log", file=sys.stderr)
            if foreground:
                _stop_children(children, layout)
            return 1
        time.sleep(0.2)
    print(f"{'node':14} {layout.node_name} Ready{'' if started_any else ' (nothing needed starting)'}")
    print(f"\nUse it:\n  export KUBECONFIG={layout.kubeconfig}\n  kubectl get nodes\n"
          "  kubectl apply -f examples/web.yaml", flush=True)
    return _supervise(children, layout, stop) if stop is not None else 0


class _StopRequest:
    """SIGINT/SIGTERM set a flag the supervisor loop reads (no work inside the handler)."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


RESTART_BACKOFF_MAX = 30.0


def _supervise(children: dict[str, tuple[Component, subprocess.Popen[bytes]]], layout: ClusterLayout,
               stop: _StopRequest) -> int:
    """Foreground mode: keep our components alive until asked to stop.

    A component that exits is started again after a back-off that doubles from 1 s
    to 30 s and resets once it has run for a minute, like a kubelet restart policy.
    Components that were already running in the background when we started are
    not ours and are left alone.
    """
    if not children:
        print("nothing was started here; every component already runs in the background", flush=True)
        return 0
    print(f"\nsupervising {', '.join(children)} in the foreground (pid {os.getpid()}); "
          "Ctrl-C or SIGTERM stops them, pods keep running", flush=True)
    backoff = {name: 1.0 for name in children}
    started = {name: time.monotonic() for name in children}
    due: dict[str, float] = {}
    while not stop.requested:
        now = time.monotonic()
        for name, (c, proc) in list(children.items()):
            rc = proc.poll()
            if rc is None:
                if now - started[name] > 60:
                    backoff[name] = 1.0
                continue
            if layout.pid_file(name).exists() and layout.pid_file(name).read_text().strip() != str(proc.pid):
                # someone else started or stopped this component (its pid file is not ours): theirs now
                print(f"{name:14} exited; its pid file is no longer ours, so it is not restarted", flush=True)
                del children[name]
                continue
            if not layout.pid_file(name).exists():
                print(f"{name:14} stopped from outside (pid file removed); not restarted", flush=True)
                del children[name]
                continue
            if name not in due:
                due[name] = now + backoff[name]
                print(f"{name:14} exited with status {rc}; restarting in {backoff[name]:.0f}s "
                      f"(see {layout.log_file(name)})", flush=True)
                backoff[name] = min(backoff[name] * 2, RESTART_BACKOFF_MAX)
            elif now >= due[name]:
                del due[name]
                if name == "agent":
                    with contextlib.suppress(Exception):
                        _join_node(layout)
                try:
                    proc = _start(c, layout, foreground=True)
                except OSError as e:  # e.g. out of processes: try again after the next back-off
                    print(f"{name:14} could not be restarted: {e}", flush=True)
                    due[name] = now + backoff[name]
                    continue
                children[name] = (c, proc)
                started[name] = now
                print(f"{name:14} restarted (pid {proc.pid})", flush=True)
        time.sleep(0.2)
    print("stopping (pods keep running; `kubeletpy down` removes them)", flush=True)
    _stop_children(children, layout)
    return 0


def _stop_children(children: dict[str, tuple[Component, subprocess.Popen[bytes]]], layout: ClusterLayout) -> None:
    """Stop what this `up` started, agent first and control plane last, and drop their pid files."""
    for name in reversed(list(children)):
        _, proc = children[name]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            if layout.pid_file(name).read_text().strip() == str(proc.pid):
                layout.pid_file(name).unlink()
        print(f"{name:14} stopped", flush=True)


def _exited(pid: int) -> bool:
    """Gone, or a zombie its parent (not us) has yet to reap: either way it has finished."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _stop(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _exited(pid):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _remove_all_pods(layout: ClusterLayout) -> int:
    """Stop and remove every sandbox through the CRI (containers, CNI DEL, mounts, cgroups)."""
    if not layout.cri_socket.exists():
        return 0
    import grpc

    from kubeletpy.cli.crictl import CRIClient

    client = CRIClient(f"unix://{layout.cri_socket}", timeout=60)
    n = 0
    try:
        for pod in client.list_pods():
            client.stop_pod(pod.id)
            client.remove_pod(pod.id)
            n += 1
    except grpc.RpcError as e:
        print(f"{'pods':14} could not remove all pods: {e.details() if hasattr(e, 'details') else e}",
              file=sys.stderr)
    finally:
        client.close()
    return n


def _has_sandboxes(layout: ClusterLayout) -> bool:
    return any((layout.state_root / "sandboxes").glob("*/sandbox.json"))


def _rmdir_cgroups(name: str) -> None:
    """Remove `name` (and empty children) from every cgroup hierarchy, deepest first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def cmd_down(args: argparse.Namespace) -> int:
    layout = _layout(args)
    sup = running_pid(layout.pid_file("up"))
    if sup is not None:  # an `up --foreground` would restart what we stop: it stops its children itself
        _stop(sup, grace=60.0)
        print(f"{'supervisor':14} stopped (pid {sup})")
    # The agent first, so nothing restarts pods while we tear down; then the pods, through
    # the still-running runtime; then the runtime and the control plane.
    for name in ("agent", "runtime", "control-plane"):
        if name == "runtime" and running_pid(layout.pid_file("runtime")) is None and _has_sandboxes(layout):
            # Pods outlive their runtime (crash, `up --foreground` stopped): a runtime started
            # just for this adopts them from its records, so they go the same careful way.
            rt = next(c for c in _components(layout) if c.name == "runtime")
            proc = _start(rt, layout)
            if _wait_answering(rt, proc, layout, 60):
                print(f"{'runtime':14} started to remove the pods it left (pid {proc.pid})")
        if name == "runtime" and running_pid(layout.pid_file("runtime")) is not None:
            n = _remove_all_pods(layout)
            print(f"{'pods':14} {n} removed")
        pid = running_pid(layout.pid_file(name))
        if pid is None:
            print(f"{name:14} not running")
        else:
            _stop(pid)
            print(f"{name:14} stopped (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            layout.pid_file(name).unlink()
    # Each pod's CNI DEL removed its veth, lease and NAT rules; what is left is shared.
    subprocess.run(["ip", "link", "del", layout.cni_bridge], capture_output=True)
    for name in (layout.cgroup_root, layout.cgroup_parent):
        _rmdir_cgroups(name)
    print(f"{'host':14} bridge {layout.cni_bridge} and cgroups removed")
    if args.purge:
        import shutil

        from cni import firewall

        firewall.remove_all()  # the shared NAT table too: only when nothing of ours stays

        for d in (layout.state_root, layout.etc_dir, layout.cni_state_dir / "networks" / "kubeletpy"):
            shutil.rmtree(d, ignore_errors=True)
            print(f"purged {d}")
        for f in layout.cni_conf_dir.glob("*kubeletpy*"):
            f.unlink()
            print(f"purged {f}")
        # The run root holds only sockets, pid files, mount points and the shim zygote's log, all
        # done with by now: drop the log and the empty directories (rmdir, so anything still in use
        # stays and says so by staying).
        if not _has_sandboxes(layout):  # shims still running would still write to it
            with contextlib.suppress(FileNotFoundError):
                (layout.run_root / "shims" / "shim.log").unlink()
        for d in sorted((p for p in layout.run_root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                        reverse=True) + [layout.run_root]:
            with contextlib.suppress(OSError):
                d.rmdir()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    layout = _layout(args)
    all_ok = True
    for c in _components(layout):
        if not c.available():
            print(f"{c.name:14} not installed")
            continue
        pid = running_pid(layout.pid_file(c.name))
        if pid is None:
            print(f"{c.name:14} stopped")
            all_ok = False
        else:
            health = "healthy" if _answers(c) else "not answering"
            print(f"{c.name:14} running (pid {pid}) {health}")
    if running_pid(layout.pid_file("control-plane")) is not None:
        print(f"{'node':14} {layout.node_name} {'Ready' if _node_ready(layout) else 'NotReady'}")
    return 0 if all_ok else 3
