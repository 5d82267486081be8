"""Wire-level checks on the generated CRI code: bytes the Go clients produce parse here, and a
real gRPC channel over a unix socket reaches the servicer at the method path crictl uses."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from cri.api import api_pb2, api_pb2_grpc


def test_round_trip_nested_request() -> None:
    req = api_pb2.CreateContainerRequest(
        pod_sandbox_id="sb1",
        config=api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="web", attempt=2),
            image=api_pb2.ImageSpec(image="busybox:latest", annotations={"a": "b"}),
            command=["sh", "-c"],
            args=["echo hi"],
            envs=[api_pb2.KeyValue(key="K", value="V")],
            mounts=[api_pb2.Mount(container_path="/data", propagation=api_pb2.PROPAGATION_BIDIRECTIONAL)],
            labels={"app": "web"},
            tty=True,
            linux=api_pb2.LinuxContainerConfig(
                resources=api_pb2.LinuxContainerResources(cpu_quota=50000, unified={"memory.high": "1G"}),
                security_context=api_pb2.LinuxContainerSecurityContext(
                    run_as_user=api_pb2.Int64Value(value=1000),
                    supplemental_groups=[1, 2, 3],
                    seccomp=api_pb2.SecurityProfile(
                        profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref="p"
                    ),
                    namespace_options=api_pb2.NamespaceOption(pid=api_pb2.CONTAINER),
                ),
            ),
        ),
        sandbox_config=api_pb2.PodSandboxConfig(
            port_mappings=[api_pb2.PortMapping(protocol=api_pb2.UDP, container_port=53, host_port=5353)],
        ),
    )
    data = req.SerializeToString()
    back = api_pb2.CreateContainerRequest.FromString(data)
    assert back == req
    assert back.config.linux.security_context.seccomp.profile_type == api_pb2.SecurityProfile.Localhost
    assert dict(back.config.linux.resources.unified) == {"memory.high": "1G"}


def test_stats_round_trip_with_wrappers() -> None:
    resp = api_pb2.ListContainerStatsResponse(
        stats=[
            api_pb2.ContainerStats(
                attributes=api_pb2.ContainerAttributes(id="c1"),
                cpu=api_pb2.CpuUsage(
                    timestamp=1, usage_core_nano_seconds=api_pb2.UInt64Value(value=2**63 + 5)
                ),
                memory=api_pb2.MemoryUsage(working_set_bytes=api_pb2.UInt64Value(value=4096)),
            )
        ]
    )
    back = api_pb2.ListContainerStatsResponse.FromString(resp.SerializeToString())
    assert back.stats[0].cpu.usage_core_nano_seconds.value == 2**63 + 5
    assert back.stats[0].HasField("memory") and not back.stats[0].HasField("writable_layer")


def test_hand_encoded_bytes() -> None:
    """Bytes written out by hand from the field numbers, as a Go client would put them on the wire."""
    assert api_pb2.VersionRequest(version="v1").SerializeToString() == b"\x0a\x02v1"
    # ImageSpec{annotations: {"a": "b"}}: field 2, one entry message {1: "a", 2: "b"}.
    assert api_pb2.ImageSpec(annotations={"a": "b"}).SerializeToString() == b"\x12\x06\x0a\x01a\x12\x01b"
    # Packed repeated int32 port = 2: [80, 443].
    packed = b"\x0a\x02sb\x12\x03\x50\xbb\x03"
    assert api_pb2.PortForwardRequest(pod_sandbox_id="sb", port=[80, 443]).SerializeToString() == packed
    unpacked = b"\x0a\x02sb\x10\x50\x10\xbb\x03"
    assert list(api_pb2.PortForwardRequest.FromString(unpacked).port) == [80, 443]
    # ExecSyncResponse: stdout bytes = 1, exit_code int32 = 3 (negative int32 is a 10-byte varint).
    resp = api_pb2.ExecSyncResponse.FromString(b"\x0a\x03out\x18" + b"\xff" * 9 + b"\x01")
    assert (resp.stdout, resp.exit_code) == (b"out", -1)
    # Namespace has only field 2.
    assert api_pb2.Namespace(options=api_pb2.NamespaceOption(network=api_pb2.NODE)).SerializeToString() == (
        b"\x12\x02\x08\x02"
    )


class _Runtime(api_pb2_grpc.RuntimeServiceServicer):
    def Version(
        self, request: api_pb2.VersionRequest, context: grpc.ServicerContext
    ) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(
            version="0.1.0",
            runtime_name="kubeletpy",
            runtime_version="0.1.0",
            runtime_api_version=request.version,
        )


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[grpc.Channel]:
    sock = tmp_path / "cri.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(_Runtime(), server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(api_pb2_grpc.ImageServiceServicer(), server)
    assert server.add_insecure_port(f"unix://{sock}")
    server.start()
    ch = grpc.insecure_channel(f"unix://{sock}")
    try:
        yield ch
    finally:
        ch.close()
        server.stop(None)


def test_grpc_version_over_unix_socket(channel: grpc.Channel) -> None:
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
    resp = stub.Version(api_pb2.VersionRequest(version="v1"), timeout=10)
    assert (resp.runtime_name, resp.runtime_api_version) == ("kubeletpy", "v1")


def test_grpc_method_path_is_the_crictl_one(channel: grpc.Channel) -> None:
    call = channel.unary_unary("/runtime.v1.RuntimeService/Version")  # raw bytes in and out
    raw = call(b"\x0a\x02v1", timeout=10)
    assert api_pb2.VersionResponse.FromString(raw).runtime_api_version == "v1"


def test_unimplemented_image_rpc(channel: grpc.Channel) -> None:
    stub = api_pb2_grpc.ImageServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ListImages(api_pb2.ListImagesRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
