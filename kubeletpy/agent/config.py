"""Every knob of the agent in one dataclass, defaulting to the kubelet's values.

Tests shrink the timings (backoff, resync, lease) instead of the code having test modes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from kubeletpy import paths
from kubeletpy.agent.eviction import DEFAULT_HARD, Threshold, parse_thresholds


@dataclass
class AgentConfig:
    server: str = ""                       # https://HOST:PORT (or from the kubeconfig)
    token: str = ""                        # admin, node or join token
    kubeconfig: Path | None = None         # a kubeconfig to use instead of server/token
    ca_file: Path | None = None
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    node_ip: str = ""                      # default: the source address of the default route
    cri_endpoint: str = f"unix://{paths.CRI_SOCKET}"
    root_dir: Path = paths.STATE_ROOT / "agent"
    pod_log_dir: Path = paths.POD_LOG_ROOT
    manifests_dir: Path | None = paths.ETC_ROOT / "manifests"
    cgroup_root: str = "kubepods"          # pod cgroups: /<root>/<qos>/pod<uid>
    max_pods: int = 110
    system_reserved_cpu_milli: int = 0
    system_reserved_memory: int = 0
    # node-pressure eviction (see eviction.py); hard thresholds also shrink allocatable
    eviction_hard: dict[str, Threshold] = field(default_factory=lambda: parse_thresholds(DEFAULT_HARD))
    eviction_soft: dict[str, Threshold] = field(default_factory=dict)  # each with its grace period
    eviction_max_pod_grace: int = 0        # soft evictions: cap on the victim's grace period (0: its own)
    eviction_pressure_transition: float = 300.0  # a pressure condition holds this long after it cleared
    eviction_interval: float = 10.0        # how often the signals are measured
    port: int = 10250                      # HTTPS server; 0 picks a free one, -1 disables it
    address: str = "0.0.0.0"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    rotate_server_certificates: bool = True  # serving certificate from the cluster CA via a CSR (certificate.py)
    # timings
    relist_period: float = 1.0             # PLEG
    evented_relist_period: float = 10.0    # PLEG while the runtime streams events
    resync_period: float = 10.0            # every pod worker syncs at least this often
    lease_duration: int = 40
    lease_renew: float = 10.0
    node_status_check: float = 10.0        # measure this often, push on change
    node_status_report: float = 300.0      # push at least this often
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    # garbage collection
    gc_period: float = 60.0
    max_dead_per_container: int = 1
    image_gc_high: float = 0.85
    image_gc_low: float = 0.80
    image_min_age: float = 120.0
    labels: dict[str, str] = field(default_factory=dict)
    authorized_tokens_file: Path | None = None

    @property
    def pods_dir(self) -> Path:
        return self.root_dir / "pods"
