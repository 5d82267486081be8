"""The container runtime core: pod sandboxes and containers on real namespaces, cgroups and a per-pod shim.

    rt = Runtime(root, run_root, log_root)
    sid = rt.run_pod_sandbox(PodSandboxConfig(metadata=PodSandboxMetadata("web", "uid-1", "default")))
    cid = rt.create_container(sid, ContainerConfig(metadata=ContainerMetadata("app"),
                                                   image=ImageSpec("kubeletpy.local/busybox:latest"),
                                                   command=["sleep", "3600"]))
    rt.start_container(cid); rt.exec_sync(cid, ["hostname"], timeout=5)
"""

from cri.runtime.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound
from cri.runtime.runtime import NetworkHook, Runtime, TeardownHook
from cri.runtime.shimclient import ExecProcess
from cri.runtime.types import (
    Capability,
    ContainerConfig,
    ContainerMetadata,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    DNSConfig,
    ExecResult,
    ImageSpec,
    Int64Value,
    KeyValue,
    LinuxContainerConfig,
    LinuxContainerResources,
    LinuxContainerSecurityContext,
    LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOption,
    NetworkResult,
    PodSandboxConfig,
    PodSandboxMetadata,
    PodSandboxState,
    PodSandboxStatus,
    PortMapping,
    ProfileType,
    SecurityProfile,
)

__all__ = [
    "AlreadyExists", "ExecProcess", "FailedPrecondition", "Internal", "InvalidArgument", "NetworkHook",
    "NotFound", "Runtime", "TeardownHook",
    "Capability",
    "ContainerConfig",
    "ContainerMetadata",
    "ContainerState",
    "ContainerStats",
    "ContainerStatus",
    "DNSConfig",
    "ExecResult",
    "ImageSpec",
    "Int64Value",
    "KeyValue",
    "LinuxContainerConfig",
    "LinuxContainerResources",
    "LinuxContainerSecurityContext",
    "LinuxPodSandboxConfig",
    "LinuxSandboxSecurityContext",
    "Mount",
    "MountPropagation",
    "NamespaceMode",
    "NamespaceOption",
    "NetworkResult",
    "PodSandboxConfig",
    "PodSandboxMetadata",
    "PodSandboxState",
    "PodSandboxStatus",
    "PortMapping",
    "ProfileType",
    "SecurityProfile",
]
