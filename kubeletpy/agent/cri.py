"""The agent's CRI client: runtime.v1 RuntimeService + ImageService over a unix socket.

Thin on purpose: every call is the protobuf request the kubelet would send, so the agent
can drive any CRI runtime. Helpers translate CRI container status into the pure
`status.CRIContainer` the status code works with.
"""

from __future__ import annotations

from typing import Any

import grpc

from cri.api import api_pb2 as pb
from cri.api import api_pb2_grpc as pbg
from kubeletpy.agent import labels as L
from kubeletpy.agent.status import CREATED, EXITED, RUNNING, UNKNOWN, CRIContainer

_STATE = {pb.CONTAINER_CREATED: CREATED, pb.CONTAINER_RUNNING: RUNNING, pb.CONTAINER_EXITED: EXITED,
          pb.CONTAINER_UNKNOWN: UNKNOWN}


def errmsg(e: BaseException) -> str:
    """The runtime's own message for a failed call (gRPC details), or the exception text."""
    if isinstance(e, grpc.aio.AioRpcError):
        return e.details() or str(e.code())
    return str(e)


def is_not_found(e: BaseException) -> bool:
    return isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.NOT_FOUND


class CRIClient:
    def __init__(self, endpoint: str, timeout: float = 30.0) -> None:
        target = endpoint if endpoint.startswith("unix:") else f"unix://{endpoint}"
        self.endpoint = target
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        self.rt = pbg.RuntimeServiceStub(self.channel)
        self.img = pbg.ImageServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    # -- runtime
    async def version(self) -> Any:
        return await self.rt.Version(pb.VersionRequest(version="v1"), timeout=self.timeout)

    async def status(self) -> Any:
        return await self.rt.Status(pb.StatusRequest(verbose=False), timeout=self.timeout)

    async def update_runtime_config(self, pod_cidr: str) -> None:
        await self.rt.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr=pod_cidr))), timeout=self.timeout)

    async def run_pod_sandbox(self, config: Any, handler: str = "") -> str:
        r = await self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config, runtime_handler=handler),
                                        timeout=max(self.timeout, 120))
        return r.pod_sandbox_id

    async def stop_pod_sandbox(self, sid: str) -> None:
        await self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=max(self.timeout, 60))

    async def remove_pod_sandbox(self, sid: str) -> None:
        await self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=max(self.timeout, 60))

    async def pod_sandbox_status(self, sid: str) -> Any:
        return (await self.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid),
                                               timeout=self.timeout)).status

    async def list_pod_sandboxes(self, labels: dict[str, str] | None = None) -> list[Any]:
        f = pb.PodSandboxFilter(label_selector=labels or {})
        return list((await self.rt.ListPodSandbox(pb.ListPodSandboxRequest(filter=f), timeout=self.timeout)).items)

    async def create_container(self, sid: str, config: Any, sandbox_config: Any) -> str:
        r = await self.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=sandbox_config), timeout=max(self.timeout, 120))
        return r.container_id

    async def start_container(self, cid: str) -> None:
        await self.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=max(self.timeout, 60))

    async def stop_container(self, cid: str, grace: int) -> None:
        await self.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=grace),
                                    timeout=grace + self.timeout)

    async def remove_container(self, cid: str) -> None:
        await self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=self.timeout)

    async def list_containers(self, labels: dict[str, str] | None = None, sandbox_id: str = "") -> list[Any]:
        f = pb.ContainerFilter(label_selector=labels or {}, pod_sandbox_id=sandbox_id)
        return list((await self.rt.ListContainers(pb.ListContainersRequest(filter=f), timeout=self.timeout))
                    .containers)

    async def list_container_stats(self, labels: dict[str, str] | None = None) -> list[Any]:
        f = pb.ContainerStatsFilter(label_selector=labels or {})
        return list((await self.rt.ListContainerStats(pb.ListContainerStatsRequest(filter=f),
                                                      timeout=self.timeout)).stats)

    async def container_status(self, cid: str) -> Any:
        return (await self.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid),
                                              timeout=self.timeout)).status

    async def exec_sync(self, cid: str, cmd: list[str], timeout: float) -> tuple[int, bytes]:
        r = await self.rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=int(max(1, timeout))),
                                   timeout=timeout + self.timeout)
        return r.exit_code, bytes(r.stdout) + bytes(r.stderr)

    async def exec_url(self, cid: str, cmd: list[str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> str:
        r = await self.rt.Exec(pb.ExecRequest(container_id=cid, cmd=cmd, stdin=stdin, stdout=stdout,
                                              stderr=stderr, tty=tty), timeout=self.timeout)
        return r.url

    async def attach_url(self, cid: str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> str:
        r = await self.rt.Attach(pb.AttachRequest(container_id=cid, stdin=stdin, stdout=stdout, stderr=stderr,
                                                  tty=tty), timeout=self.timeout)
        return r.url

    async def port_forward_url(self, sid: str, ports: list[int]) -> str:
        r = await self.rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=sid, port=ports), timeout=self.timeout)
        return r.url

    # -- images
    async def list_images(self) -> list[Any]:
        return list((await self.img.ListImages(pb.ListImagesRequest(), timeout=self.timeout)).images)

    async def image_status(self, image: str) -> Any | None:
        r = await self.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image)), timeout=self.timeout)
        return r.image if r.HasField("image") and r.image.id else None

    async def pull_image(self, image: str, auth: dict[str, str] | None, sandbox_config: Any) -> str:
        a = pb.AuthConfig(**auth) if auth else None
        r = await self.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image), auth=a,
                                                         sandbox_config=sandbox_config), timeout=600)
        return r.image_ref

    async def remove_image(self, image: str) -> None:
        await self.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)), timeout=self.timeout)

    async def image_fs_info(self) -> list[Any]:
        return list((await self.img.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=self.timeout)).image_filesystems)


def to_view(st: Any) -> CRIContainer:
    """CRI ContainerStatus -> the pure CRIContainer."""
    return CRIContainer(
        id=st.id, state=_STATE.get(st.state, UNKNOWN), exit_code=st.exit_code, reason=st.reason,
        message=st.message, created_at=st.created_at, started_at=st.started_at, finished_at=st.finished_at,
        image=st.image.image, image_ref=st.image_ref,
        restart_count=int(st.annotations.get(L.RESTART_COUNT, "0") or 0))


def container_state(c: Any) -> str:
    return _STATE.get(c.state, UNKNOWN)
