"""`kubeletpy agent`: run the node agent (the kubelet).

    kubeletpy agent --server https://HOST:6443 --token TOKEN [--ca-file CA] [--node-name N]
                    [--cri unix:///run/kubeletpy/cri.sock] [--max-pods 110] [--root-dir DIR]

--token may be the admin token or the node-join token (`<data-dir>/join-token` of the
control plane); the join token is exchanged for a per-node credential stored in
<root-dir>/kubeconfig. With no credentials at all (as `kubeletpy up` starts it) the agent
joins the control plane of this host (its admin kubeconfig's server and CA, its join
token). Stopping the agent (even kill -9) leaves pods running.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from kubeletpy import paths


def _quantity_pair(text: str) -> tuple[int, int]:
    from kubeletpy.agent import quantity

    cpu = mem = 0
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        if k == "cpu":
            cpu = quantity.milli(v)
        elif k == "memory":
            mem = quantity.value(v)
        else:
            raise argparse.ArgumentTypeError(f"unknown resource {k!r} (cpu, memory)")
    return cpu, mem


def register(parser: argparse.ArgumentParser, name: str) -> None:
    a = parser.add_argument
    a("--server", default="", help="API server URL, https://HOST:PORT")
    a("--token", default="", help="bearer token: admin, node, or the node-join token")
    a("--kubeconfig", type=Path, default=None, help="use this kubeconfig instead of --server/--token")
    a("--ca-file", type=Path, default=None, help="CA bundle of the API server (the join token may go without)")
    a("--node-name", default="", help="node name (default: the hostname)")
    a("--node-ip", default="", help="InternalIP to report (default: the source address of the default route)")
    a("--cri", default=f"unix://{paths.CRI_SOCKET}", help="CRI endpoint (default %(default)s)")
    a("--max-pods", type=int, default=110)
    a("--root-dir", type=Path, default=paths.STATE_ROOT / "agent", help="volumes, credentials (default %(default)s)")
    a("--pod-log-dir", type=Path, default=paths.POD_LOG_ROOT, help="pod log directories (default %(default)s)")
    a("--manifests-dir", default=str(paths.ETC_ROOT / "manifests"),
      help="static pod manifests ('' disables; default %(default)s)")
    a("--cgroup-root", default="kubepods", help="pod cgroups go under /<root>/<qos>/pod<uid> (default %(default)s)")
    a("--system-reserved", type=_quantity_pair, default=(0, 0), metavar="cpu=100m,memory=256Mi",
      help="taken off allocatable")
    a("--port", type=int, default=10250, help="HTTPS port (0: any free port, -1: no server; default %(default)s)")
    a("--address", default="0.0.0.0")
    a("--tls-cert-file", type=Path, default=None)
    a("--rotate-server-certificates", action=argparse.BooleanOptionalAction, default=True,
      help="get the :10250 serving certificate from the cluster CA through a CertificateSigningRequest, and "
           "renew it (default on; off, or --tls-cert-file: a self-signed or the given certificate)")
    a("--tls-private-key-file", type=Path, default=None)
    a("--authorized-tokens-file", type=Path, default=None,
      help="bearer tokens the HTTPS server accepts besides admin credentials (one per line)")
    a("--node-labels", default="", help="k=v,k2=v2 added to the Node")
    a("--node-status-report", type=float, default=300.0, help="push node status at least this often (s)")
    a("--node-status-check", type=float, default=10.0,
      help="measure node status (conditions) this often, pushing it when it changed (s)")
    a("--backoff", default="10,300,600", metavar="INITIAL,MAX,RESET",
      help="CrashLoopBackOff seconds: first delay, cap, reset after running this long (default %(default)s)")
    a("--resync", type=float, default=10.0, help="every pod is re-synced at least this often (s)")
    a("--relist-period", type=float, default=1.0, help="PLEG: how often the runtime is listed (s)")
    a("--evented-relist-period", type=float, default=10.0,
      help="PLEG: the relist period while the runtime streams container events (s)")
    a("--gc-period", type=float, default=60.0, help="dead container/image collection period (s)")
    a("--max-dead-per-container", type=int, default=1)
    a("--eviction-hard", default=None, metavar="SIGNAL<VALUE,...",
      help="hard eviction thresholds, kubelet syntax (default: memory.available<100Mi,nodefs.available<10%%,"
           "nodefs.inodesFree<5%%,pid.available<10%%; '' disables them)")
    a("--eviction-soft", default="", metavar="SIGNAL<VALUE,...",
      help="soft eviction thresholds: acted on once crossed for their --eviction-soft-grace-period")
    a("--eviction-soft-grace-period", default="", metavar="SIGNAL=DURATION,...",
      help="how long each soft threshold must stay crossed, e.g. memory.available=1m30s")
    a("--eviction-max-pod-grace-period", type=int, default=0, metavar="SECONDS",
      help="soft evictions give the pod at most this grace period (default 0: the pod's own)")
    a("--eviction-pressure-transition-period", default="5m0s", metavar="DURATION",
      help="a pressure condition stays this long after its threshold is no longer crossed (default 5m0s)")
    a("--eviction-monitoring-interval", type=float, default=10.0, help="how often signals are measured (s)")
    a("--image-gc-high-threshold", type=float, default=85, help="image fs %% that starts image GC (default 85)")
    a("--image-gc-low-threshold", type=float, default=80, help="image GC frees down to this %% (default 80)")
    a("--image-minimum-gc-age", type=float, default=120.0,
      help="an image first seen less than this many seconds ago is never collected (default 120, the "
           "kubelet's imageMinimumGCAge)")
    a("-v", "--verbose", action="store_true")
    parser.set_defaults(func=cmd_agent)


def local_defaults(args: argparse.Namespace) -> None:
    """No credentials given (`kubeletpy up`): use the control plane on this host -- the
    server and CA from its admin kubeconfig, and its node-join token, so the agent still
    runs with its own node identity rather than as admin."""
    from kubeletpy.controlplane.app import DEFAULT_DATA_DIR, DEFAULT_KUBECONFIG

    join = DEFAULT_DATA_DIR / "join-token"
    if not DEFAULT_KUBECONFIG.exists() or not join.exists():
        return
    from kubeletpy.controlplane import kubeconfig as kc

    cfg = kc.load(DEFAULT_KUBECONFIG) or {}
    server, ca_b64, _ = kc.current(cfg)
    if not server:
        return
    import base64

    ca_path = args.root_dir / "ca.crt"
    args.root_dir.mkdir(parents=True, exist_ok=True)
    ca_path.write_bytes(base64.b64decode(ca_b64))
    args.server, args.ca_file = args.server or server, args.ca_file or ca_path
    args.token = join.read_text().strip()


def config_from_args(args: argparse.Namespace) -> object:
    from kubeletpy.agent.config import AgentConfig
    from kubeletpy.cli import CLIError

    cfg = AgentConfig(server=args.server, token=args.token, kubeconfig=args.kubeconfig, ca_file=args.ca_file,
                      cri_endpoint=args.cri, max_pods=args.max_pods, root_dir=args.root_dir,
                      pod_log_dir=args.pod_log_dir, manifests_dir=Path(args.manifests_dir) if args.manifests_dir
                      else None, cgroup_root=args.cgroup_root, port=args.port, address=args.address,
                      tls_cert=args.tls_cert_file, tls_key=args.tls_private_key_file,
                      node_status_report=args.node_status_report, resync_period=args.resync,
                      gc_period=args.gc_period, max_dead_per_container=args.max_dead_per_container,
                      node_ip=args.node_ip, relist_period=args.relist_period,
                      evented_relist_period=args.evented_relist_period,
                      image_gc_high=args.image_gc_high_threshold / 100, image_gc_low=args.image_gc_low_threshold / 100,
                      image_min_age=args.image_minimum_gc_age)
    from kubeletpy.agent.eviction import ThresholdError, parse_duration, parse_soft, parse_thresholds
    try:
        if args.eviction_hard is not None:
            cfg.eviction_hard = parse_thresholds(args.eviction_hard)
        cfg.eviction_soft = parse_soft(args.eviction_soft, args.eviction_soft_grace_period)
    except ThresholdError as e:
        raise CLIError(str(e)) from None
    try:
        cfg.eviction_pressure_transition = parse_duration(args.eviction_pressure_transition_period)
    except ValueError as e:
        raise CLIError(f"--eviction-pressure-transition-period: {e} (e.g. 30s, 5m0s)") from None
    if args.eviction_max_pod_grace_period < 0:
        raise CLIError("--eviction-max-pod-grace-period: must not be negative")
    cfg.eviction_max_pod_grace = args.eviction_max_pod_grace_period
    cfg.rotate_server_certificates = args.rotate_server_certificates
    cfg.eviction_interval = args.eviction_monitoring_interval
    cfg.node_status_check = args.node_status_check
    if not 0 <= cfg.image_gc_low <= cfg.image_gc_high <= 1:
        raise CLIError("--image-gc-low-threshold must be <= --image-gc-high-threshold, both within 0-100")
    if args.node_name:
        cfg.node_name = args.node_name
    cfg.system_reserved_cpu_milli, cfg.system_reserved_memory = args.system_reserved
    b = [float(x) for x in args.backoff.split(",")]
    cfg.backoff_initial, cfg.backoff_max, cfg.backoff_reset = (b + [300.0, 600.0])[:3] if len(b) < 3 else b[:3]
    cfg.labels = dict(kv.split("=", 1) for kv in args.node_labels.split(",") if "=" in kv)
    cfg.authorized_tokens_file = args.authorized_tokens_file
    return cfg


async def _main(cfg: object) -> None:
    from kubeletpy.agent.agent import Agent, connect

    client = await connect(cfg)  # type: ignore[arg-type]
    agent = Agent(cfg, client)  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    print(f"kubeletpy agent: node {agent.cfg.node_name} running (https port {agent.server_port})", flush=True)
    try:
        await stop.wait()
    finally:
        await agent.stop()


def cmd_agent(args: argparse.Namespace) -> int:
    from kubeletpy.cli import CLIError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.kubeconfig and not (args.server and args.token):
        local_defaults(args)
    if not args.kubeconfig and not (args.server and args.token):
        raise CLIError("need --server and --token, or --kubeconfig (no local control plane found)", 2)
    cfg = config_from_args(args)
    try:
        asyncio.run(_main(cfg))
    except (ValueError, OSError) as e:
        raise CLIError(f"agent: {e}") from None
    return 0
