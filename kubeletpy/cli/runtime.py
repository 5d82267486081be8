"""`kubeletpy runtime`: the CRI runtime daemon (runtime.v1 over a unix socket).

Defaults follow containerd/Kubernetes conventions (kubeletpy.paths); every path
is a flag so several daemons can run side by side on one host (tests, benches).
"""

from __future__ import annotations

import argparse
import logging
import os

from kubeletpy import paths
from kubeletpy.cli import CLIError


def register(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--socket", default=None,
                        help=f"listen endpoint (default unix://{paths.CRI_SOCKET}, or <run-root>/cri.sock)")
    parser.add_argument("--root", default=str(paths.STATE_ROOT), help="state root (default %(default)s)")
    parser.add_argument("--run-root", default=None, help=f"sockets, netns, shims (default {paths.RUN_ROOT})")
    parser.add_argument("--log-root", default=str(paths.POD_LOG_ROOT), help="pod logs (default %(default)s)")
    parser.add_argument("--cni-conf-dir", default=str(paths.CNI_CONF_DIR), help="CNI configs (default %(default)s)")
    parser.add_argument("--cni-bin-dir", default=str(paths.CNI_BIN_DIR),
                        help="CNI plugin dirs, colon-separated (default %(default)s)")
    parser.add_argument("--cni-cache-dir", default=str(paths.CNI_STATE_DIR / "results"),
                        help="CNI ADD result cache (default %(default)s)")
    parser.add_argument("--cni-bridge", default="kpbr0",
                        help="bridge of the config UpdateRuntimeConfig writes (default %(default)s)")
    parser.add_argument("--cni-data-dir", default="",
                        help="host-local dataDir of the config UpdateRuntimeConfig writes (default the plugin's)")
    parser.add_argument("--cgroup-parent", default="kubeletpy", help="cgroup of pods without one (default %(default)s)")
    parser.add_argument("--stream-address", default="127.0.0.1:0",
                        help="host:port of the exec/attach/port-forward server (default %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=cmd_runtime)


def cmd_runtime(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cri.server import DaemonConfig, DaemonError, run

    run_root = args.run_root or str(paths.RUN_ROOT)
    socket = args.socket or (f"unix://{os.path.join(run_root, 'cri.sock')}" if args.run_root
                             else f"unix://{paths.CRI_SOCKET}")
    config = DaemonConfig(
        socket=socket, root=args.root, run_root=run_root, log_root=args.log_root,
        cni_conf_dir=args.cni_conf_dir, cni_bin_dirs=[d for d in args.cni_bin_dir.split(":") if d],
        cni_cache_dir=args.cni_cache_dir, cni_bridge=args.cni_bridge, cni_data_dir=args.cni_data_dir,
        cgroup_parent=args.cgroup_parent, stream_address=args.stream_address)
    try:
        return run(config)
    except DaemonError as e:
        raise CLIError(str(e)) from None
