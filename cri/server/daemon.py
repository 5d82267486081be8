"""The CRI daemon: one gRPC server on a unix socket, the streaming server, the runtime.

Several daemons may run side by side (different roots and sockets). Each holds
an flock on `<socket>.lock` for its lifetime: a second daemon on the same socket
is refused with a clear error instead of silently stealing it (gRPC unlinks an
existing socket file when it binds), while a socket left by a crashed daemon,
whose lock died with it, is simply replaced.

SIGTERM/SIGINT stop the gRPC and streaming servers and release the spare shim;
pods keep running, because their shims, not this process, are their parents.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import threading
from concurrent import futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cni.spec import CNIError
from cri.api import api_pb2, api_pb2_grpc
from cri.images import ImageStore
from cri.runtime import Runtime
from cri.server.network import PodNetwork
from cri.server.service import ImageService, RuntimeService
from cri.server.streaming import StreamServer
from kubeletpy import paths

log = logging.getLogger("kubeletpy.cri")

MAX_MESSAGE = 16 << 20   # containerd's CRI limit; larger requests fail with RESOURCE_EXHAUSTED


class DaemonError(Exception):
    """Start-up failed in a way the operator must fix (message says how)."""


@dataclass
class DaemonConfig:
    socket: str = f"unix://{paths.CRI_SOCKET}"
    root: str = str(paths.STATE_ROOT)
    run_root: str = str(paths.RUN_ROOT)
    log_root: str = str(paths.POD_LOG_ROOT)
    cni_conf_dir: str = str(paths.CNI_CONF_DIR)
    cni_bin_dirs: list[str] = field(default_factory=lambda: [str(paths.CNI_BIN_DIR)])
    cni_cache_dir: str = str(paths.CNI_STATE_DIR / "results")
    cni_bridge: str = "kpbr0"
    cni_data_dir: str = ""
    cgroup_parent: str = "kubeletpy"
    stream_address: str = "127.0.0.1:0"
    workers: int = 64


def socket_path(endpoint: str) -> Path:
    """`unix:///run/x.sock`, `unix:/run/x.sock` or a plain path → the path."""
    if endpoint.startswith("unix://"):
        endpoint = endpoint[len("unix://"):]
    elif endpoint.startswith("unix:"):
        endpoint = endpoint[len("unix:"):]
    if not endpoint.startswith("/"):
        raise DaemonError(f"--socket must be an absolute unix socket path, got {endpoint!r}")
    if len(endpoint.encode()) > 107:
        raise DaemonError(f"socket path {endpoint!r} is longer than a unix socket address allows (107 bytes)")
    return Path(endpoint)


def _is_live(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class SocketClaim:
    """Own `path` for this process: the flock beside it, then a stale socket file may go."""

    def __init__(self, path: Path, own_dir: bool = False) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.own_dir = own_dir   # the socket's dir is ours (the run root): make it 0750 even if it exists
        self.fd = -1

    def acquire(self) -> None:
        d = self.path.parent
        if not d.exists():
            d.mkdir(parents=True, mode=0o750)
            self.own_dir = True
        if self.own_dir:
            # never on a shared dir like /tmp that merely happens to hold the socket
            os.chmod(d, 0o750)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DaemonError(f"another kubeletpy runtime (pid {owner}) is serving on {self.path}; "
                              "stop it first or pick another --socket") from None
        if self.path.exists() or self.path.is_symlink():
            if _is_live(self.path):
                os.close(fd)
                raise DaemonError(f"{self.path} is in use by another process (it accepts connections); "
                                  "stop it first or pick another --socket")
            log.warning("replacing stale socket %s (left by a daemon that did not stop cleanly)", self.path)
            self.path.unlink()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
            os.close(self.fd)
            self.fd = -1


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.path = socket_path(config.socket)
        self.claim = SocketClaim(self.path, own_dir=self.path.parent == Path(config.run_root))
        self.runtime: Runtime | None = None
        self.stream: StreamServer | None = None
        self.server: grpc.Server | None = None
        self.health: health.HealthServicer | None = None
        self._stopped = threading.Event()

    @staticmethod
    def _repair_network(network: PodNetwork, rt: Runtime) -> None:
        """Release IP leases, veths and NAT rules of attachments no sandbox record refers to.

        After a reboot or a crash between CNI ADD and the sandbox record, nothing would
        ever DEL those attachments (the most reported CNI leak). Only this runtime's own
        network (the conflist it loads) is touched, and every sandbox it still has a
        record of is kept, ready or not: a NOTREADY pod's lease is released by the
        kubelet's StopPodSandbox, as with containerd.
        """
        net, _ = network.config()
        if net is None:
            return
        known = [s.id for s in rt.list_pod_sandboxes()]
        try:
            released = network.invoker.repair(net, known)
        except CNIError as e:
            log.warning("cni repair of network %s failed: %s", net.name, e)
            return
        for cid, ifname in released:
            log.info("cni repair: released %s/%s of network %s (no such sandbox)", cid[:12], ifname, net.name)

    def start(self) -> None:
        self.claim.acquire()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        c = self.config
        network = PodNetwork(c.cni_conf_dir, c.cni_bin_dirs, c.cni_cache_dir, bridge=c.cni_bridge,
                             ipam_data_dir=c.cni_data_dir or None)
        images = ImageStore(root=c.root)
        self.runtime = rt = Runtime(c.root, c.run_root, c.log_root, cgroup_parent=c.cgroup_parent,
                                    image_store=images, network_setup=network.setup,
                                    network_teardown=network.teardown)
        self._repair_network(network, rt)
        self.stream = StreamServer(rt, c.stream_address)
        self.stream.start()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=c.workers, thread_name_prefix="cri"),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                     ("grpc.max_send_message_length", MAX_MESSAGE)])
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(
            RuntimeService(rt, network, self.stream, daemon_config=asdict(c)), self.server)
        api_pb2_grpc.add_ImageServiceServicer_to_server(ImageService(images), self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [api_pb2.DESCRIPTOR.services_by_name[n].full_name for n in ("RuntimeService", "ImageService")]
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        old = os.umask(0o117)   # the socket is born 0660: never a window where others could connect
        try:
            if self.server.add_insecure_port(f"unix://{self.path}") == 0:
                raise DaemonError(f"cannot listen on {self.path}")
        finally:
            os.umask(old)
        self.server.start()
        os.chmod(self.path, 0o660)
        for name in ["", *names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("kubeletpy CRI runtime serving on unix://%s (streaming on %s)", self.path, self.stream.base_url)

    def stop(self, grace: float = 5.0) -> None:
        """Stop serving; pods keep running. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        if self.server is not None:
            self.server.stop(grace).wait(grace + 1)
        if self.stream is not None:
            self.stream.stop()
        if self.runtime is not None:
            self.runtime.close()
        self.claim.release()

    def wait(self) -> None:
        self._stopped.wait()


def run(config: DaemonConfig, ready_fd: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT. Returns the exit code."""
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping (pods keep running)", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    d = Daemon(config)
    d.start()
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
    try:
        while not done.wait(1.0):
            pass
    finally:
        d.stop()
    log.info("stopped")
    return 0
