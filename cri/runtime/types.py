"""Plain dataclasses mirroring CRI runtime.v1 messages (the gRPC server translates protobuf ↔ these).

Field names follow the proto so the translation is mechanical. Extensions
beyond CRI are marked "ext:".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class NamespaceMode(IntEnum):
    POD = 0
    CONTAINER = 1
    NODE = 2
    TARGET = 3


class MountPropagation(IntEnum):
    PROPAGATION_PRIVATE = 0
    PROPAGATION_HOST_TO_CONTAINER = 1   # rslave
    PROPAGATION_BIDIRECTIONAL = 2       # rshared


class ProfileType(IntEnum):
    RuntimeDefault = 0
    Unconfined = 1
    Localhost = 2


class PodSandboxState(IntEnum):
    SANDBOX_READY = 0
    SANDBOX_NOTREADY = 1


class ContainerState(IntEnum):
    CONTAINER_CREATED = 0
    CONTAINER_RUNNING = 1
    CONTAINER_EXITED = 2
    CONTAINER_UNKNOWN = 3


@dataclass
class NamespaceOption:
    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.CONTAINER
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""


@dataclass
class SecurityProfile:
    profile_type: ProfileType = ProfileType.RuntimeDefault
    localhost_ref: str = ""


@dataclass
class Int64Value:
    value: int = 0


@dataclass
class LinuxContainerResources:
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    memory_swap_limit_in_bytes: int = 0
    unified: dict[str, str] = field(default_factory=dict)
    pids_limit: int = 0                 # ext: CRI leaves pids to the kubelet's pod cgroup


@dataclass
class LinuxSandboxSecurityContext:
    namespace_options: NamespaceOption = field(default_factory=NamespaceOption)
    run_as_user: Int64Value | None = None
    run_as_group: Int64Value | None = None
    readonly_rootfs: bool = False
    supplemental_groups: list[int] = field(default_factory=list)
    privileged: bool = False
    seccomp: SecurityProfile | None = None
    seccomp_profile_path: str = ""      # deprecated string form


@dataclass
class LinuxPodSandboxConfig:
    cgroup_parent: str = ""
    security_context: LinuxSandboxSecurityContext = field(default_factory=LinuxSandboxSecurityContext)
    sysctls: dict[str, str] = field(default_factory=dict)
    overhead: LinuxContainerResources | None = None
    resources: LinuxContainerResources | None = None


@dataclass
class PodSandboxMetadata:
    name: str = ""
    uid: str = ""
    namespace: str = ""
    attempt: int = 0


@dataclass
class DNSConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass
class PortMapping:
    protocol: int = 0        # 0 TCP, 1 UDP, 2 SCTP
    container_port: int = 0
    host_port: int = 0
    host_ip: str = ""


@dataclass
class PodSandboxConfig:
    metadata: PodSandboxMetadata = field(default_factory=PodSandboxMetadata)
    hostname: str = ""
    log_directory: str = ""
    dns_config: DNSConfig | None = None
    port_mappings: list[PortMapping] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    linux: LinuxPodSandboxConfig = field(default_factory=LinuxPodSandboxConfig)


@dataclass
class ContainerMetadata:
    name: str = ""
    attempt: int = 0


@dataclass
class ImageSpec:
    image: str = ""
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class KeyValue:
    key: str = ""
    value: str = ""


@dataclass
class Mount:
    container_path: str = ""
    host_path: str = ""
    readonly: bool = False
    selinux_relabel: bool = False
    propagation: MountPropagation = MountPropagation.PROPAGATION_PRIVATE
    empty_dir: str = ""   # ext: a per-pod scratch dir of this name, shared by the pod's containers


@dataclass
class Capability:
    add_capabilities: list[str] = field(default_factory=list)
    drop_capabilities: list[str] = field(default_factory=list)
    add_ambient_capabilities: list[str] = field(default_factory=list)


@dataclass
class LinuxContainerSecurityContext:
    capabilities: Capability | None = None
    privileged: bool = False
    namespace_options: NamespaceOption | None = None
    run_as_user: Int64Value | None = None
    run_as_group: Int64Value | None = None
    run_as_username: str = ""
    readonly_rootfs: bool = False
    supplemental_groups: list[int] = field(default_factory=list)
    no_new_privs: bool = False
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    seccomp: SecurityProfile | None = None
    seccomp_profile_path: str = ""      # deprecated string form: runtime/default, localhost/<path>, …


@dataclass
class LinuxContainerConfig:
    resources: LinuxContainerResources | None = None
    security_context: LinuxContainerSecurityContext = field(default_factory=LinuxContainerSecurityContext)


@dataclass
class ContainerConfig:
    metadata: ContainerMetadata = field(default_factory=ContainerMetadata)
    image: ImageSpec = field(default_factory=ImageSpec)
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    working_dir: str = ""
    envs: list[KeyValue] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_path: str = ""          # relative to the sandbox's log_directory, as in CRI
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    linux: LinuxContainerConfig = field(default_factory=LinuxContainerConfig)


# ---- results ------------------------------------------------------------------------

@dataclass
class PodSandboxStatus:
    id: str
    metadata: PodSandboxMetadata
    state: PodSandboxState
    created_at: int
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    namespace_options: NamespaceOption = field(default_factory=NamespaceOption)
    netns_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_handler: str = ""
    infra_pid: int = 0
    shim_pid: int = 0
    cgroup_parent: str = ""


@dataclass
class ContainerStatus:
    id: str
    pod_sandbox_id: str
    metadata: ContainerMetadata
    state: ContainerState
    created_at: int
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    image: str = ""
    image_ref: str = ""
    reason: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    log_path: str = ""
    pid: int = 0
    resources: LinuxContainerResources | None = None


@dataclass
class ContainerStats:
    id: str
    timestamp: int
    cpu_usage_core_nano_seconds: int
    memory_working_set_bytes: int
    memory_usage_bytes: int
    pids: int
    cpu_nr_throttled: int = 0


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int
    timed_out: bool = False


@dataclass
class NetworkResult:
    """What a network hook returns (the CNI layer fills it)."""

    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
