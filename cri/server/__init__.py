"""The CRI runtime.v1 gRPC server (what the kubelet talks to), wire-compatible with Kubernetes CRI.

    daemon.py     socket ownership, gRPC server (+ health, reflection), signals
    service.py    RuntimeService and ImageService handlers
    convert.py    protobuf ⇄ cri.runtime dataclasses
    errors.py     exceptions → gRPC status codes (containerd's mapping)
    network.py    CNI config + ADD/DEL for pod sandboxes
    streaming.py  Exec/Attach/PortForward URLs and the aiohttp server behind them

`kubeletpy runtime` (kubeletpy/cli/runtime.py) runs it; `kubeletpy crictl` is its client.
"""

from cri.server.daemon import Daemon, DaemonConfig, DaemonError, run

__all__ = ["Daemon", "DaemonConfig", "DaemonError", "run"]
