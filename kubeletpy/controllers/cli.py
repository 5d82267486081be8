"""Command-line flags shared by `python -m kubeletpy.scheduler` and `python -m kubeletpy.controllers`,
and by the control-plane process (`add_flags` + `options_from_args`), so every entry point
spells them like the Kubernetes binaries do."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from . import Options


def add_flags(p: argparse.ArgumentParser, *, scheduler: bool = True, controllers: bool = True) -> None:
    if controllers:
        p.add_argument("--cluster-cidr", default="10.244.0.0/16", metavar="CIDR[,CIDR]",
                       help="pod CIDR range; each node gets a block of it (\"\" disables node IPAM)")
        p.add_argument("--node-cidr-mask-size", type=int, default=None, metavar="N",
                       help="prefix length of each node's block (default 24 for IPv4, 64 for IPv6)")
        p.add_argument("--node-monitor-grace-period", type=float, default=50.0, metavar="SECONDS",
                       help="a node whose Lease is not renewed for this long is marked Unknown (default 50)")
        p.add_argument("--node-monitor-period", type=float, default=5.0, metavar="SECONDS",
                       help="how often node health is checked (default 5)")
        p.add_argument("--cluster-signing-cert-file", default="", metavar="PATH",
                       help="CA certificate that signs approved CertificateSigningRequests (in `kubeletpy "
                            "control-plane`: the cluster CA)")
        p.add_argument("--cluster-signing-key-file", default="", metavar="PATH", help="its private key")
        p.add_argument("--cluster-signing-duration", type=float, default=365 * 24 * 3600.0, metavar="SECONDS",
                       help="longest certificate the signer issues (default one year)")
        p.add_argument("--csr-auto-approve", action=argparse.BooleanOptionalAction, default=True,
                       help="approve node serving CSRs whose names and addresses are the node's own (default on)")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="take a Lease in kube-system before acting (default on)")
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0, metavar="SECONDS")
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0, metavar="SECONDS")


def options_from_args(a: argparse.Namespace, *, scheduler: bool = True, controllers: bool = True) -> Options:
    o = Options(leader_elect=a.leader_elect, lease_duration=a.leader_elect_lease_duration,
                renew_deadline=a.leader_elect_renew_deadline, retry_period=a.leader_elect_retry_period,
                run_scheduler=scheduler, run_controllers=controllers)
    if controllers:
        o.cluster_cidr = a.cluster_cidr
        o.node_cidr_mask_size = a.node_cidr_mask_size
        o.node_monitor_grace_period = a.node_monitor_grace_period
        o.node_monitor_period = a.node_monitor_period
        o.cluster_signing_cert_file = a.cluster_signing_cert_file
        o.cluster_signing_key_file = a.cluster_signing_key_file
        o.cluster_signing_duration = a.cluster_signing_duration
        o.csr_auto_approve = a.csr_auto_approve
    if getattr(a, "identity", ""):
        o.identity = a.identity
    return o


def main(prog: str, *, scheduler: bool, controllers: bool, argv: list[str] | None = None) -> int:
    from kubeletpy.apiclient import Client

    from . import run_all

    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--kubeconfig", required=True, help="kubeconfig with the API server URL, CA and token")
    p.add_argument("--identity", default="", help="leader-election identity (default host_pid_random)")
    p.add_argument("-v", "--verbose", action="store_true")
    add_flags(p, scheduler=scheduler, controllers=controllers)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = options_from_args(a, scheduler=scheduler, controllers=controllers)

    async def amain() -> None:
        client = Client.from_kubeconfig(a.kubeconfig, user_agent=prog.rsplit(".", 1)[-1])
        task = asyncio.ensure_future(run_all(client, options))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()

    asyncio.run(amain())
    return 0
