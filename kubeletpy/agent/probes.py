"""Probes: the pure result state machine and the four probers.

A probe result only flips after `successThreshold` consecutive successes or
`failureThreshold` consecutive failures. Liveness starts as Success (a container is alive
until proven dead), readiness starts as Failure (not ready until proven ready), startup
starts unknown and gates the other two. The worker calls `ProbeState.observe` with each
outcome and acts on `result` changes (restart on liveness failure, Ready on readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
SUCCESS, FAILURE, UNKNOWN = "Success", "Failure", "Unknown"


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    handler: dict[str, Any]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_api(cls, kind: str, p: dict[str, Any]) -> ProbeSpec:
        handler = {k: v for k, v in p.items() if k in ("exec", "httpGet", "tcpSocket", "grpc")}
        succ = int(p.get("successThreshold") or 1)
        if kind != READINESS:
            succ = 1  # the API requires 1 for liveness and startup
        return cls(kind, handler, float(p.get("initialDelaySeconds") or 0), float(p.get("periodSeconds") or 10),
                   float(p.get("timeoutSeconds") or 1), succ, int(p.get("failureThreshold") or 3))


@dataclass
class ProbeState:
    spec: ProbeSpec
    result: str = ""
    successes: int = 0
    failures: int = 0
    last_output: str = ""

    def __post_init__(self) -> None:
        if not self.result:
            self.result = {LIVENESS: SUCCESS, READINESS: FAILURE, STARTUP: UNKNOWN}[self.spec.kind]

    def observe(self, ok: bool, output: str = "") -> bool:
        """Count one outcome; True when `result` changed."""
        before = self.result
        self.last_output = output
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.spec.success_threshold:
                self.result = SUCCESS
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.spec.failure_threshold:
                self.result = FAILURE
        return self.result != before


@dataclass
class ProbeTarget:
    """Where a probe goes: the pod IP, the container's named ports, a way to exec."""

    pod_ip: str
    container_id: str
    ports: dict[str, int] = field(default_factory=dict)
    exec_sync: Callable[[str, list[str], float], Awaitable[tuple[int, bytes]]] | None = None


def resolve_port(port: Any, named: dict[str, int]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    if port in named:
        return named[port]
    raise ValueError(f"port {port!r} not found among the container's ports")


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


async def run_probe(spec: ProbeSpec, target: ProbeTarget) -> tuple[bool, str]:
    """One attempt; (ok, output). Any error (timeout, refused, bad status) is a failure."""
    h = spec.handler
    try:
        if "exec" in h:
            if target.exec_sync is None:
                return False, "exec probes need a runtime"
            code, out = await target.exec_sync(target.container_id, list(h["exec"].get("command") or []),
                                               spec.timeout)
            return code == 0, out.decode("utf-8", "replace")[:1024]
        if "httpGet" in h:
            return await asyncio.wait_for(_http(h["httpGet"], target), spec.timeout)
        if "tcpSocket" in h:
            hg = h["tcpSocket"]
            host = hg.get("host") or target.pod_ip
            port = resolve_port(hg.get("port"), target.ports)
            _, w = await asyncio.wait_for(asyncio.open_connection(host, port), spec.timeout)
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
            return True, ""
        if "grpc" in h:
            return await _grpc(h["grpc"], target, spec.timeout)
    except TimeoutError:
        return False, f"{spec.kind} probe timed out after {spec.timeout:g}s"
    except Exception as e:  # noqa: BLE001 - every error is a probe failure
        return False, f"{type(e).__name__}: {e}"
    return False, "probe has no handler"


async def _http(hg: dict[str, Any], target: ProbeTarget) -> tuple[bool, str]:
    import aiohttp

    scheme = (hg.get("scheme") or "HTTP").lower()
    host = hg.get("host") or target.pod_ip
    port = resolve_port(hg.get("port"), target.ports)
    path = hg.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {"User-Agent": "kube-probe/kubeletpy", "Accept": "*/*"}
    for hdr in hg.get("httpHeaders") or []:
        headers[hdr.get("name", "")] = hdr.get("value", "")
    url = f"{scheme}://{host}:{port}{path}"
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers, allow_redirects=True,
                                                  ssl=_INSECURE if scheme == "https" else None) as r:
        body = await r.content.read(10 * 1024)
        ok = 200 <= r.status < 400
        return ok, f"HTTP probe failed with statuscode: {r.status}" if not ok else body.decode("utf-8", "replace")


async def _grpc(g: dict[str, Any], target: ProbeTarget, timeout: float) -> tuple[bool, str]:
    try:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        return False, "grpc probes need grpcio-health-checking"
    port = resolve_port(g.get("port"), target.ports)
    # Straight to the pod, as the kubelet dials: never through an http(s)_proxy/grpc_proxy of our environment.
    async with grpc.aio.insecure_channel(f"{target.pod_ip}:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=g.get("service") or ""), timeout=timeout)
        ok = resp.status == health_pb2.HealthCheckResponse.SERVING
        return ok, "" if ok else f"service unhealthy (responded with {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)})"
