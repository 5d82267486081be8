"""The CRI runtime.v1 RuntimeService and ImageService over cri.runtime and cri.images.

Each handler: validate what the proto cannot (required messages, value ranges),
convert to the runtime's dataclasses, call the runtime, convert back. Errors
become gRPC codes in cri.server.errors. Handlers run on the gRPC thread pool;
what must not interleave for one pod or container (stop vs. remove vs. start) is
serialised by per-id locks here, never by one lock around everything.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

import kubeletpy
from cri.api import api_pb2 as pb
from cri.api import api_pb2_grpc as pb_grpc
from cri.images import ImageNotFound
from cri.images.gc import usage as dir_usage
from cri.runtime import ContainerState, NamespaceMode, PodSandboxState, Runtime
from cri.runtime import errors as rt_errors
from cri.runtime import types as T
from cri.server import convert as C
from cri.server.errors import RPCError, invalid, not_found, rpc
from cri.server.network import PodNetwork
from cri.server.streaming import StreamServer
from cri.streaming import ExecOptions

log = logging.getLogger("kubeletpy.cri")

RUNTIME_NAME = "kubeletpy"
API_VERSION = "v1"
MAX_EXEC_OUTPUT = 16 << 20        # ExecSync stdout/stderr cap each, like containerd's
MIN_MEMORY_LIMIT = 4 << 20        # below this not even the container's first process fits
MAX_CPU_SHARES = 262144           # the kernel's cgroup v1 ceiling (it would clamp silently)


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, n = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, n + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, n = self._locks[key]
                if n == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, n - 1)


def _labels_match(labels: dict[str, str], selector: Any) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _check_resources(r: T.LinuxContainerResources | None, what: str) -> None:
    """Values the kernel would reject half-way (leaving a half-made container) or silently clamp."""
    if r is None:
        return
    if 0 < r.memory_limit_in_bytes < MIN_MEMORY_LIMIT:
        raise invalid(f"{what}.memory_limit_in_bytes {r.memory_limit_in_bytes} is below the minimum "
                      f"of {MIN_MEMORY_LIMIT} bytes")
    if r.cpu_shares > MAX_CPU_SHARES:
        raise invalid(f"{what}.cpu_shares {r.cpu_shares} exceeds the maximum of {MAX_CPU_SHARES}")
    if not -1000 <= r.oom_score_adj <= 1000:
        raise invalid(f"{what}.oom_score_adj {r.oom_score_adj} is outside [-1000, 1000]")
    for name in ("cpu_period", "cpu_shares", "memory_limit_in_bytes", "memory_swap_limit_in_bytes"):
        if getattr(r, name) < 0:
            raise invalid(f"{what}.{name} must not be negative (got {getattr(r, name)})")


def _check_port_mappings(maps: list[T.PortMapping]) -> None:
    """Caught here, a bad mapping is InvalidArgument; caught by the portmap plugin, a half-made pod to undo."""
    for m in maps:
        if not 0 < m.container_port < 65536 or not 0 <= m.host_port < 65536:
            raise invalid(f"port mapping {m.container_port}->{m.host_port}: ports must be 1-65535")
        if m.protocol not in (0, 1, 2):
            raise invalid(f"port mapping {m.container_port}: unknown protocol {m.protocol}")
        if m.host_ip:
            try:
                ipaddress.ip_address(m.host_ip)
            except ValueError:
                raise invalid(f"port mapping {m.container_port}: host_ip {m.host_ip!r} is not an IP address") from None


class RuntimeService(pb_grpc.RuntimeServiceServicer):
    def __init__(self, runtime: Runtime, network: PodNetwork, stream: StreamServer,
                 daemon_config: dict[str, Any] | None = None) -> None:
        self.rt = runtime
        self.net = network
        self.stream = stream
        self.daemon_config = daemon_config or {}
        self.locks = KeyedLocks()
        self._names: set[str] = set()
        self._names_lock = threading.Lock()

    # ---- helpers -------------------------------------------------------------------------
    def _sandbox_id(self, ident: str) -> str:
        if not ident:
            raise invalid("pod sandbox id is required")
        return self.rt.pod_sandbox_status(ident).id

    def _container_id(self, ident: str) -> str:
        if not ident:
            raise invalid("container id is required")
        return self.rt.container_status(ident).id

    @contextlib.contextmanager
    def _reserve(self, key: str, what: str) -> Iterator[None]:
        """Name reservation while a create is in flight (the runtime's own check covers finished ones)."""
        with self._names_lock:
            if key in self._names:
                raise RPCError(grpc.StatusCode.ALREADY_EXISTS, f"{what} name {key!r} is being created right now")
            self._names.add(key)
        try:
            yield
        finally:
            with self._names_lock:
                self._names.discard(key)

    # ---- version / status ----------------------------------------------------------------
    @rpc
    def Version(self, request: pb.VersionRequest, context: grpc.ServicerContext) -> pb.VersionResponse:
        return pb.VersionResponse(version="0.1.0", runtime_name=RUNTIME_NAME,
                                  runtime_version=kubeletpy.__version__, runtime_api_version=API_VERSION)

    @rpc
    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        net_ok, reason, message = self.net.status()
        conds = [pb.RuntimeCondition(type="RuntimeReady", status=True),
                 pb.RuntimeCondition(type="NetworkReady", status=net_ok, reason=reason, message=message)]
        resp = pb.StatusResponse(status=pb.RuntimeStatus(conditions=conds))
        if request.verbose:
            net, why = self.net.config()
            resp.info["config"] = json.dumps(self.daemon_config)
            resp.info["cniconfig"] = json.dumps({"source": net.source if net else "", "error": why,
                                                 "config": net.raw if net else None})
        return resp

    @rpc
    def UpdateRuntimeConfig(self, request: pb.UpdateRuntimeConfigRequest,
                            context: grpc.ServicerContext) -> pb.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            # kubelet may send a comma-separated dual-stack pair; the first family drives the config.
            self.net.write_pod_cidr(cidr.split(",")[0].strip())
        return pb.UpdateRuntimeConfigResponse()

    # ---- sandboxes -----------------------------------------------------------------------
    @rpc
    def RunPodSandbox(self, request: pb.RunPodSandboxRequest,
                      context: grpc.ServicerContext) -> pb.RunPodSandboxResponse:
        if not request.HasField("config") or not request.config.HasField("metadata"):
            raise invalid("sandbox config must include metadata")
        if request.runtime_handler not in ("", RUNTIME_NAME):
            raise invalid(f"no runtime for {request.runtime_handler!r} is configured")
        userns = request.config.linux.security_context.namespace_options
        if userns.HasField("userns_options") and userns.userns_options.mode != pb.NODE:
            raise invalid("user namespaces are not supported by kubeletpy (userns_options.mode must be NODE)")
        config = C.from_proto(T.PodSandboxConfig, request.config)
        md = config.metadata
        if not md.name or not md.namespace or not md.uid:
            raise invalid("sandbox metadata needs name, namespace and uid")
        _check_port_mappings(config.port_mappings)
        host_net = config.linux.security_context.namespace_options.network == NamespaceMode.NODE
        _check_resources(config.linux.resources, "linux.resources")
        _check_resources(config.linux.overhead, "linux.overhead")
        if not host_net:
            ok, _, message = self.net.status()
            if not ok:
                raise RPCError(grpc.StatusCode.FAILED_PRECONDITION, message)
        with self._reserve(f"{md.name}_{md.namespace}_{md.uid}_{md.attempt}", "pod sandbox"):
            sid = self.rt.run_pod_sandbox(config, request.runtime_handler)
        log.info("RunPodSandbox %s/%s -> %s", md.namespace, md.name, sid)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    @rpc
    def StopPodSandbox(self, request: pb.StopPodSandboxRequest,
                       context: grpc.ServicerContext) -> pb.StopPodSandboxResponse:
        try:
            sid = self._sandbox_id(request.pod_sandbox_id)
        except rt_errors.NotFound as e:
            if "ambiguous" in str(e):
                raise
            return pb.StopPodSandboxResponse()  # CRI: idempotent once everything is reclaimed
        with self.locks.hold(sid):
            self.rt.stop_pod_sandbox(sid)
        return pb.StopPodSandboxResponse()

    def GetContainerEvents(self, request: pb.GetEventsRequest,
                           context: grpc.ServicerContext) -> Iterator[pb.ContainerEventResponse]:
        """Stream lifecycle events (cri/runtime/events.py) until the client goes away.

        Each event carries its pod's current sandbox status and container statuses, as
        containerd sends them, so a kubelet can update a pod without asking again.
        """
        q = self.rt.events.subscribe()
        context.add_callback(lambda: self.rt.events.unsubscribe(q))
        context.send_initial_metadata(())  # the client learns at once that the stream is open
        try:
            while context.is_active():
                try:
                    batch = [q.get(timeout=0.5)]
                except queue.Empty:
                    continue
                with contextlib.suppress(queue.Empty):
                    while len(batch) < 256:  # a burst (30 pods starting): what is queued goes together
                        batch.append(q.get_nowait())
                yield from self._events_pb(batch)
        finally:
            self.rt.events.unsubscribe(q)

    def _events_pb(self, batch: list[Any]) -> Iterator[pb.ContainerEventResponse]:
        """The pod's statuses are read once per pod per batch: they are the current ones at send
        time either way, and a burst of starts queues several events for each pod."""
        pods: dict[str, tuple[pb.PodSandboxStatus | None, list[pb.ContainerStatus]]] = {}
        for ev in batch:
            if ev.sandbox_id not in pods:
                try:
                    sb = C.sandbox_status_pb(self.rt.pod_sandbox_status(ev.sandbox_id))
                    pods[ev.sandbox_id] = (sb, [C.container_status_pb(st)
                                                for st in self.rt.pod_containers(ev.sandbox_id)])
                except rt_errors.NotFound:  # already removed: the event says so by itself
                    pods[ev.sandbox_id] = (None, [])
            sb, ctrs = pods[ev.sandbox_id]
            yield pb.ContainerEventResponse(container_id=ev.container_id, container_event_type=int(ev.type),
                                            created_at=ev.created_at, pod_sandbox_status=sb,
                                            containers_statuses=ctrs)

    @rpc
    def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest,
                         context: grpc.ServicerContext) -> pb.RemovePodSandboxResponse:
        try:
            sid = self._sandbox_id(request.pod_sandbox_id)
        except rt_errors.NotFound as e:
            if "ambiguous" in str(e):
                raise
            return pb.RemovePodSandboxResponse()
        with self.locks.hold(sid):
            self.rt.remove_pod_sandbox(sid)  # stops it first if it is still ready
        return pb.RemovePodSandboxResponse()

    @rpc
    def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest,
                         context: grpc.ServicerContext) -> pb.PodSandboxStatusResponse:
        if not request.pod_sandbox_id:
            raise invalid("pod sandbox id is required")
        st = self.rt.pod_sandbox_status(request.pod_sandbox_id)
        resp = pb.PodSandboxStatusResponse(status=C.sandbox_status_pb(st), timestamp=time.time_ns())
        if request.verbose:
            resp.info["info"] = json.dumps({
                "pid": st.infra_pid, "shimPid": st.shim_pid, "netNamespace": st.netns_path,
                "netNamespaceClosed": not (st.netns_path and os.path.exists(st.netns_path)),
                "cgroupParent": st.cgroup_parent, "runtimeHandler": st.runtime_handler,
                "ips": [ip for ip in [st.ip, *st.additional_ips] if ip]})
        return resp

    @rpc
    def ListPodSandbox(self, request: pb.ListPodSandboxRequest,
                       context: grpc.ServicerContext) -> pb.ListPodSandboxResponse:
        f = request.filter
        state = PodSandboxState(f.state.state) if f.HasField("state") else None
        items = self.rt.list_pod_sandboxes(id=f.id, state=state, label_selector=dict(f.label_selector))
        return pb.ListPodSandboxResponse(items=[C.sandbox_pb(s) for s in items])

    # ---- containers ----------------------------------------------------------------------
    @rpc
    def CreateContainer(self, request: pb.CreateContainerRequest,
                        context: grpc.ServicerContext) -> pb.CreateContainerResponse:
        if not request.pod_sandbox_id:
            raise invalid("pod sandbox id is required")
        if not request.HasField("config") or not request.config.HasField("metadata"):
            raise invalid("container config must include metadata")
        if request.config.devices:
            # refuse rather than start a container without the devices it was promised
            raise invalid("devices are not supported by kubeletpy (container config lists "
                          f"{len(request.config.devices)})")
        config = C.from_proto(T.ContainerConfig, request.config)
        if not config.metadata.name:
            raise invalid("container metadata needs a name")
        if not config.image.image:
            raise invalid("container config must include an image")
        _check_resources(config.linux.resources, "linux.resources")
        sb_config = (C.from_proto(T.PodSandboxConfig, request.sandbox_config)
                     if request.HasField("sandbox_config") else None)
        sid = self._sandbox_id(request.pod_sandbox_id)
        with self._reserve(f"{sid}/{config.metadata.name}_{config.metadata.attempt}", "container"):
            cid = self.rt.create_container(sid, config, sb_config)
        return pb.CreateContainerResponse(container_id=cid)

    @rpc
    def StartContainer(self, request: pb.StartContainerRequest,
                       context: grpc.ServicerContext) -> pb.StartContainerResponse:
        cid = self._container_id(request.container_id)
        with self.locks.hold(cid):
            self.rt.start_container(cid)
        return pb.StartContainerResponse()

    @rpc
    def StopContainer(self, request: pb.StopContainerRequest,
                      context: grpc.ServicerContext) -> pb.StopContainerResponse:
        if request.timeout < 0:
            raise invalid(f"timeout must not be negative (got {request.timeout})")
        cid = self._container_id(request.container_id)
        with self.locks.hold(cid):
            self.rt.stop_container(cid, timeout=request.timeout)
        return pb.StopContainerResponse()

    @rpc
    def RemoveContainer(self, request: pb.RemoveContainerRequest,
                        context: grpc.ServicerContext) -> pb.RemoveContainerResponse:
        try:
            cid = self._container_id(request.container_id)
        except rt_errors.NotFound as e:
            if "ambiguous" in str(e):
                raise
            return pb.RemoveContainerResponse()  # already gone: fine (CRI)
        with self.locks.hold(cid):
            self.rt.remove_container(cid)  # a running one is killed first
        return pb.RemoveContainerResponse()

    @rpc
    def ListContainers(self, request: pb.ListContainersRequest,
                       context: grpc.ServicerContext) -> pb.ListContainersResponse:
        f = request.filter
        state = ContainerState(f.state.state) if f.HasField("state") else None
        items = self.rt.list_containers(id=f.id, pod_sandbox_id=f.pod_sandbox_id, state=state,
                                        label_selector=dict(f.label_selector))
        return pb.ListContainersResponse(containers=[C.container_pb(c) for c in items])

    @rpc
    def ContainerStatus(self, request: pb.ContainerStatusRequest,
                        context: grpc.ServicerContext) -> pb.ContainerStatusResponse:
        if not request.container_id:
            raise invalid("container id is required")
        st = self.rt.container_status(request.container_id)
        resp = pb.ContainerStatusResponse(status=C.container_status_pb(st))
        if request.verbose:
            resp.info["info"] = json.dumps({"sandboxID": st.pod_sandbox_id, "pid": st.pid,
                                            "logPath": st.log_path, "imageRef": st.image_ref})
        return resp

    @rpc
    def UpdateContainerResources(self, request: pb.UpdateContainerResourcesRequest,
                                 context: grpc.ServicerContext) -> pb.UpdateContainerResourcesResponse:
        if not request.HasField("linux"):
            raise invalid("linux resources are required")
        res = C.from_proto(T.LinuxContainerResources, request.linux)
        _check_resources(res, "linux")
        cid = self._container_id(request.container_id)
        with self.locks.hold(cid):
            self.rt.update_container_resources(cid, res)
        return pb.UpdateContainerResourcesResponse()

    @rpc
    def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest,
                           context: grpc.ServicerContext) -> pb.ReopenContainerLogResponse:
        self.rt.reopen_container_log(self._container_id(request.container_id))
        return pb.ReopenContainerLogResponse()

    # ---- exec / attach / port-forward ----------------------------------------------------
    @rpc
    def ExecSync(self, request: pb.ExecSyncRequest, context: grpc.ServicerContext) -> pb.ExecSyncResponse:
        if not request.cmd:
            raise invalid("cmd is required")
        if request.timeout < 0:
            raise invalid(f"timeout must not be negative (got {request.timeout})")
        cid = self._container_id(request.container_id)
        res = self.rt.exec_sync(cid, list(request.cmd), timeout=float(request.timeout))
        if res.timed_out:
            # The kubelet turns DEADLINE_EXCEEDED into a probe timeout; the process is already killed.
            raise RPCError(grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"command {list(request.cmd)!r} timed out after {request.timeout}s")
        return pb.ExecSyncResponse(stdout=res.stdout[:MAX_EXEC_OUTPUT], stderr=res.stderr[:MAX_EXEC_OUTPUT],
                                   exit_code=res.exit_code)

    def _running_container(self, ident: str) -> str:
        if not ident:
            raise invalid("container id is required")
        st = self.rt.container_status(ident)
        if st.state != ContainerState.CONTAINER_RUNNING:
            raise RPCError(grpc.StatusCode.FAILED_PRECONDITION, f"container {st.id} is not running")
        return st.id

    @rpc
    def Exec(self, request: pb.ExecRequest, context: grpc.ServicerContext) -> pb.ExecResponse:
        if not request.cmd:
            raise invalid("cmd is required")
        if not (request.stdin or request.stdout or request.stderr):
            raise invalid("one of stdin, stdout, or stderr must be set")
        if request.tty and request.stderr:
            raise invalid("tty and stderr cannot both be true")
        cid = self._running_container(request.container_id)
        opts = ExecOptions(command=list(request.cmd), container=cid, stdin=request.stdin,
                           stdout=request.stdout, stderr=request.stderr, tty=request.tty)
        return pb.ExecResponse(url=self.stream.url_for_exec(opts))

    @rpc
    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext) -> pb.AttachResponse:
        if not (request.stdin or request.stdout or request.stderr):
            raise invalid("one of stdin, stdout, or stderr must be set")
        if request.tty and request.stderr:
            raise invalid("tty and stderr cannot both be true")
        cid = self._running_container(request.container_id)
        opts = ExecOptions(command=[], container=cid, stdin=request.stdin, stdout=request.stdout,
                           stderr=request.stderr, tty=request.tty)
        return pb.AttachResponse(url=self.stream.url_for_exec(opts, attach=True))

    @rpc
    def PortForward(self, request: pb.PortForwardRequest, context: grpc.ServicerContext) -> pb.PortForwardResponse:
        if not request.pod_sandbox_id:
            raise invalid("pod sandbox id is required")
        for p in request.port:
            if not 0 < p < 65536:
                raise invalid(f"invalid port {p}")
        st = self.rt.pod_sandbox_status(request.pod_sandbox_id)
        if st.state != PodSandboxState.SANDBOX_READY:
            raise RPCError(grpc.StatusCode.FAILED_PRECONDITION, f"pod sandbox {st.id} is not ready")
        return pb.PortForwardResponse(url=self.stream.url_for_portforward(st.id, list(request.port)))

    # ---- stats ---------------------------------------------------------------------------
    def _writable_layer(self, cid: str, ts: int) -> tuple[int, int, str] | None:
        snaps = getattr(self.rt, "snapshots", None)
        if snaps is None:
            return None
        with contextlib.suppress(Exception):
            rootfs = snaps.mounts(cid)
            used, inodes = dir_usage(rootfs.parent / "upper")
            return used, inodes, str(snaps.dir)
        return None

    def _ctr_stats(self, st: T.ContainerStatus) -> pb.ContainerStats:
        s = self.rt.container_stats(st.id)
        return C.container_stats_pb(s, st, self._writable_layer(st.id, s.timestamp))

    @rpc
    def ContainerStats(self, request: pb.ContainerStatsRequest,
                       context: grpc.ServicerContext) -> pb.ContainerStatsResponse:
        if not request.container_id:
            raise invalid("container id is required")
        st = self.rt.container_status(request.container_id)
        return pb.ContainerStatsResponse(stats=self._ctr_stats(st))

    @rpc
    def ListContainerStats(self, request: pb.ListContainerStatsRequest,
                           context: grpc.ServicerContext) -> pb.ListContainerStatsResponse:
        f = request.filter
        out = []
        for st in self.rt.list_containers(id=f.id, pod_sandbox_id=f.pod_sandbox_id,
                                          state=ContainerState.CONTAINER_RUNNING,
                                          label_selector=dict(f.label_selector)):
            with contextlib.suppress(rt_errors.RuntimeError_):  # exited or removed meanwhile
                out.append(self._ctr_stats(st))
        return pb.ListContainerStatsResponse(stats=out)

    def _pod_stats(self, st: T.PodSandboxStatus) -> pb.PodSandboxStats:
        now = time.time_ns()
        out = pb.PodSandboxStats(attributes=pb.PodSandboxAttributes(
            id=st.id, metadata=C.metadata_pb(st.metadata), labels=st.labels, annotations=st.annotations))
        lx = out.linux
        cg = self.rt.pod_sandbox_stats(st.id)
        lx.cpu.CopyFrom(pb.CpuUsage(timestamp=now,
                                    usage_core_nano_seconds=pb.UInt64Value(value=cg.cpu_usage_core_nano_seconds)))
        lx.memory.CopyFrom(pb.MemoryUsage(timestamp=now,
                                          working_set_bytes=pb.UInt64Value(value=cg.memory_working_set_bytes),
                                          usage_bytes=pb.UInt64Value(value=cg.memory_usage_bytes)))
        lx.process.CopyFrom(pb.ProcessUsage(timestamp=now, process_count=pb.UInt64Value(value=cg.pids)))
        if st.netns_path and st.infra_pid:
            ifaces = _net_dev(st.infra_pid)
            if ifaces:
                lx.network.timestamp = now
                for name, (rx, rxe, tx, txe) in ifaces.items():
                    iface = pb.NetworkInterfaceUsage(
                        name=name, rx_bytes=pb.UInt64Value(value=rx), rx_errors=pb.UInt64Value(value=rxe),
                        tx_bytes=pb.UInt64Value(value=tx), tx_errors=pb.UInt64Value(value=txe))
                    if name == "eth0":
                        lx.network.default_interface.CopyFrom(iface)
                    else:
                        lx.network.interfaces.append(iface)
        for c in self.rt.list_containers(pod_sandbox_id=st.id, state=ContainerState.CONTAINER_RUNNING):
            with contextlib.suppress(rt_errors.RuntimeError_):
                lx.containers.append(self._ctr_stats(c))
        return out

    @rpc
    def PodSandboxStats(self, request: pb.PodSandboxStatsRequest,
                        context: grpc.ServicerContext) -> pb.PodSandboxStatsResponse:
        if not request.pod_sandbox_id:
            raise invalid("pod sandbox id is required")
        return pb.PodSandboxStatsResponse(stats=self._pod_stats(self.rt.pod_sandbox_status(request.pod_sandbox_id)))

    @rpc
    def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest,
                            context: grpc.ServicerContext) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        out = []
        for st in self.rt.list_pod_sandboxes(id=f.id, state=PodSandboxState.SANDBOX_READY,
                                             label_selector=dict(f.label_selector)):
            with contextlib.suppress(rt_errors.RuntimeError_):
                out.append(self._pod_stats(st))
        return pb.ListPodSandboxStatsResponse(stats=out)


def _net_dev(pid: int) -> dict[str, tuple[int, int, int, int]]:
    """/proc/<infra>/net/dev shows the pod's netns: (rx bytes, rx errs, tx bytes, tx errs) per interface."""
    out: dict[str, tuple[int, int, int, int]] = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        v = rest.split()
        if name.strip() != "lo" and len(v) >= 11:
            out[name.strip()] = (int(v[0]), int(v[2]), int(v[8]), int(v[10]))
    return out


class ImageService(pb_grpc.ImageServiceServicer):
    def __init__(self, store: Any) -> None:
        self.store = store

    @rpc
    def ListImages(self, request: pb.ListImagesRequest, context: grpc.ServicerContext) -> pb.ListImagesResponse:
        want = request.filter.image.image
        images = self.store.list()
        if want:
            try:
                wanted_id = self.store.get(want).id
            except ImageNotFound:
                return pb.ListImagesResponse()
            images = [i for i in images if i.id == wanted_id]
        return pb.ListImagesResponse(images=[C.image_pb(i) for i in images])

    @rpc
    def ImageStatus(self, request: pb.ImageStatusRequest, context: grpc.ServicerContext) -> pb.ImageStatusResponse:
        ref = request.image.image
        if not ref:
            raise invalid("image is required")
        try:
            img = self.store.get(ref)
        except ImageNotFound:
            return pb.ImageStatusResponse()  # CRI: no image is an empty answer, not an error
        resp = pb.ImageStatusResponse(image=C.image_pb(img))
        if request.verbose:
            resp.info["info"] = json.dumps({"imageSpec": img.config, "manifestDigest": img.manifest_digest,
                                            "layers": img.to_json()["layers"]})
        return resp

    @rpc
    def PullImage(self, request: pb.PullImageRequest, context: grpc.ServicerContext) -> pb.PullImageResponse:
        ref = request.image.image
        if not ref:
            raise invalid("image is required")
        img = self.store.pull(ref, auth=_auth(request.auth) if request.HasField("auth") else None)
        log.info("PullImage %s -> %s", ref, img.id)
        return pb.PullImageResponse(image_ref=img.id)

    @rpc
    def RemoveImage(self, request: pb.RemoveImageRequest, context: grpc.ServicerContext) -> pb.RemoveImageResponse:
        ref = request.image.image
        if not ref:
            raise invalid("image is required")
        try:
            self.store.remove(ref)
        except ImageNotFound:
            pass  # CRI: removing what is not there succeeds
        return pb.RemoveImageResponse()

    @rpc
    def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: grpc.ServicerContext) -> pb.ImageFsInfoResponse:
        used, inodes = self.store.fs_usage()
        fs = pb.FilesystemUsage(timestamp=time.time_ns(),
                                fs_id=pb.FilesystemIdentifier(mountpoint=str(self.store.mountpoint)),
                                used_bytes=pb.UInt64Value(value=used), inodes_used=pb.UInt64Value(value=inodes))
        return pb.ImageFsInfoResponse(image_filesystems=[fs])


def _auth(a: pb.AuthConfig) -> tuple[str, str] | str | None:
    """CRI AuthConfig → what the image store takes: (user, password) or a bearer token."""
    if a.username or a.password:
        return a.username, a.password
    if a.auth:
        try:
            user, _, password = base64.b64decode(a.auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise invalid("auth is not base64 of user:password") from None
        return user, password
    if a.registry_token:
        return a.registry_token
    if a.identity_token:
        return a.identity_token
    return None


__all__ = ["ImageService", "KeyedLocks", "RuntimeService", "not_found"]
