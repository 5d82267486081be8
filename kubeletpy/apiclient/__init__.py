"""A small Kubernetes REST client: what the scheduler, the controllers and the node agent
use to talk to the API server -- only over HTTPS, like kube-scheduler does.

    client = Client.from_kubeconfig("/etc/kubeletpy/admin.kubeconfig", user_agent="kube-scheduler")
    pod = await client.get(PODS, "web", "default")
    async for ev in client.watch(PODS, "default", resource_version=rv): ...
"""

from .client import Client, WatchEvent
from .config import ClientConfig, load_kubeconfig
from .errors import AlreadyExistsError, ApiError, ConflictError, GoneError, NotFoundError, TransportError
from .informer import Informer
from .resources import (
    CONFIGMAPS,
    CSRS,
    EVENTS,
    EVENTS_V1,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    SECRETS,
    Resource,
    object_key,
)
from .timeutil import micro_time, parse_time, rfc3339

__all__ = [
    "AlreadyExistsError", "ApiError", "CONFIGMAPS", "CSRS", "Client", "ClientConfig", "ConflictError", "EVENTS", "EVENTS_V1",
    "GoneError", "Informer", "LEASES", "NAMESPACES", "NODES", "NotFoundError", "PODS", "Resource", "SECRETS",
    "TransportError", "WatchEvent", "load_kubeconfig", "micro_time", "object_key", "parse_time", "rfc3339",
]
