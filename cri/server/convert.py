"""protobuf ⇄ the runtime's dataclasses.

Requests go proto → dataclass generically: cri.runtime.types mirrors the proto
field names, so walking the dataclass fields and reading the same-named proto
field is all it takes, and a field added to both needs no code here. An absent
sub-message becomes what the proto would read as (its zero values), except for
fields the dataclass declares Optional, which stay None: "not set" matters there
(resources, run_as_user, seccomp...). Replies are built by hand per message:
they are few, and the proto side has fields (timestamps, nested wrappers) that
have no one-to-one dataclass field.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

from google.protobuf.message import Message

from cri.api import api_pb2 as pb
from cri.runtime import types as T

D = TypeVar("D")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def from_proto(cls: type[D], msg: Message) -> D:
    """Build dataclass `cls` from proto `msg`, field by field (see module docstring)."""
    fields_by_name = msg.DESCRIPTOR.fields_by_name
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        fd = fields_by_name.get(f.name)
        if fd is None:
            continue  # a kubeletpy extension with no wire form: keep the default
        tp, optional = _unwrap_optional(hints[f.name])
        value = getattr(msg, f.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            kwargs[f.name] = dict(value)
        elif fd.is_repeated:
            inner = (typing.get_args(tp) or (Any,))[0]
            if isinstance(inner, type) and dataclasses.is_dataclass(inner):
                kwargs[f.name] = [from_proto(inner, v) for v in value]
            else:
                kwargs[f.name] = list(value)
        elif fd.message_type is not None:
            if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
                continue
            if msg.HasField(f.name):
                kwargs[f.name] = from_proto(tp, value)
            elif not optional:
                kwargs[f.name] = from_proto(tp, value)  # the zero message, as the wire means it
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            try:
                kwargs[f.name] = tp(value)
            except ValueError:
                from cri.runtime.errors import InvalidArgument

                raise InvalidArgument(f"{cls.__name__}.{f.name}: invalid value {value}") from None
        else:
            kwargs[f.name] = value
    return cls(**kwargs)


# ---- replies ----------------------------------------------------------------------------

def metadata_pb(md: T.PodSandboxMetadata) -> pb.PodSandboxMetadata:
    return pb.PodSandboxMetadata(name=md.name, uid=md.uid, namespace=md.namespace, attempt=md.attempt)


def ctr_metadata_pb(md: T.ContainerMetadata) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(name=md.name, attempt=md.attempt)


def namespace_options_pb(ns: T.NamespaceOption) -> pb.NamespaceOption:
    return pb.NamespaceOption(network=int(ns.network), pid=int(ns.pid), ipc=int(ns.ipc), target_id=ns.target_id)


def sandbox_status_pb(st: T.PodSandboxStatus) -> pb.PodSandboxStatus:
    return pb.PodSandboxStatus(
        id=st.id, metadata=metadata_pb(st.metadata), state=int(st.state), created_at=st.created_at,
        network=pb.PodSandboxNetworkStatus(ip=st.ip, additional_ips=[pb.PodIP(ip=ip) for ip in st.additional_ips]),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=namespace_options_pb(st.namespace_options))),
        labels=st.labels, annotations=st.annotations, runtime_handler=st.runtime_handler)


def sandbox_pb(st: T.PodSandboxStatus) -> pb.PodSandbox:
    return pb.PodSandbox(id=st.id, metadata=metadata_pb(st.metadata), state=int(st.state),
                         created_at=st.created_at, labels=st.labels, annotations=st.annotations,
                         runtime_handler=st.runtime_handler)


def resources_pb(r: T.LinuxContainerResources) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes, oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems, unified=r.unified,
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes)


def mount_pb(m: T.Mount) -> pb.Mount:
    return pb.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly,
                    selinux_relabel=m.selinux_relabel, propagation=int(m.propagation))


def container_status_pb(st: T.ContainerStatus) -> pb.ContainerStatus:
    out = pb.ContainerStatus(
        id=st.id, metadata=ctr_metadata_pb(st.metadata), state=int(st.state), created_at=st.created_at,
        started_at=st.started_at, finished_at=st.finished_at, exit_code=st.exit_code,
        image=pb.ImageSpec(image=st.image), image_ref=st.image_ref, reason=st.reason, message=st.message,
        labels=st.labels, annotations=st.annotations, mounts=[mount_pb(m) for m in st.mounts],
        log_path=st.log_path)
    if st.resources is not None:
        out.resources.linux.CopyFrom(resources_pb(st.resources))
    return out


def container_pb(st: T.ContainerStatus) -> pb.Container:
    return pb.Container(id=st.id, pod_sandbox_id=st.pod_sandbox_id, metadata=ctr_metadata_pb(st.metadata),
                        image=pb.ImageSpec(image=st.image), image_ref=st.image_ref, state=int(st.state),
                        created_at=st.created_at, labels=st.labels, annotations=st.annotations)


def container_stats_pb(s: T.ContainerStats, st: T.ContainerStatus | None,
                       writable: tuple[int, int, str] | None = None) -> pb.ContainerStats:
    out = pb.ContainerStats(
        attributes=pb.ContainerAttributes(id=s.id),
        cpu=pb.CpuUsage(timestamp=s.timestamp,
                        usage_core_nano_seconds=pb.UInt64Value(value=s.cpu_usage_core_nano_seconds)),
        memory=pb.MemoryUsage(timestamp=s.timestamp,
                              working_set_bytes=pb.UInt64Value(value=s.memory_working_set_bytes),
                              usage_bytes=pb.UInt64Value(value=s.memory_usage_bytes)))
    if st is not None:
        out.attributes.metadata.CopyFrom(ctr_metadata_pb(st.metadata))
        out.attributes.labels.update(st.labels)
        out.attributes.annotations.update(st.annotations)
    if writable is not None:
        used, inodes, mountpoint = writable
        out.writable_layer.CopyFrom(pb.FilesystemUsage(
            timestamp=s.timestamp, fs_id=pb.FilesystemIdentifier(mountpoint=mountpoint),
            used_bytes=pb.UInt64Value(value=used), inodes_used=pb.UInt64Value(value=inodes)))
    return out


def image_pb(img: Any) -> pb.Image:
    """cri.images.Image → CRI Image; uid/username come from the image config's User, as containerd does."""
    out = pb.Image(id=img.id, repo_tags=list(img.repo_tags), repo_digests=list(img.repo_digests),
                   size=int(img.size), spec=pb.ImageSpec(image=img.id))
    user = (img.runtime_config.get("User") or "").split(":", 1)[0]
    if user.isdigit():
        out.uid.value = int(user)
    elif user:
        out.username = user
    return out
