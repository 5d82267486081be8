"""Where kubeletpy keeps things on a host, following Kubernetes/containerd conventions.

Each daemon takes a `--root` (or `--data-dir`) so several instances can run side
by side; these are only the defaults.
"""

from pathlib import Path

STATE_ROOT = Path("/var/lib/kubeletpy")          # survives reboots: images, pod/container records
RUN_ROOT = Path("/run/kubeletpy")                # sockets, pid files, netns bind mounts (tmpfs)
ETC_ROOT = Path("/etc/kubeletpy")                # config: registries.toml, admin.kubeconfig, manifests/
POD_LOG_ROOT = Path("/var/log/pods")             # CRI-format container logs
DAEMON_LOG_ROOT = Path("/var/log/kubeletpy")     # logs of the daemons `kubeletpy up` starts
CNI_CONF_DIR = Path("/etc/cni/net.d")
CNI_BIN_DIR = Path("/opt/cni/bin")
CNI_STATE_DIR = Path("/var/lib/cni")
CRI_SOCKET = RUN_ROOT / "cri.sock"
