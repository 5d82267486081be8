"""Controllers of the control plane, and the one call that runs them with the scheduler.

* `nodeipam`       -- pod CIDRs for Nodes from --cluster-cidr;
* `nodelifecycle`  -- Node health from Leases, not-ready/unreachable taints, taint eviction;
* `certificates`   -- CertificateSigningRequests: auto-approval of node serving certificates,
                      signing approved ones with the cluster CA;
* `leaderelection` -- a coordination.k8s.io Lease so one replica acts at a time.

They use only the API server's HTTPS REST API (`kubeletpy.apiclient`), like
kube-controller-manager; `run_all(client, options)` runs them and the scheduler as
asyncio tasks, each set behind its own leader Lease (`kube-scheduler`,
`kube-controller-manager` in kube-system) when `leader_elect` is on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubeletpy.apiclient import Client

from .leaderelection import LeaderElector, default_identity

log = logging.getLogger("kubeletpy.controllers")


@dataclass
class Options:
    cluster_cidr: str = "10.244.0.0/16"      # --cluster-cidr ("" disables node IPAM)
    node_cidr_mask_size: int | None = None     # default /24 (IPv4), /64 (IPv6)
    node_monitor_grace_period: float = 50.0    # --node-monitor-grace-period
    node_monitor_period: float = 5.0           # --node-monitor-period
    orphan_grace: float = 10.0                 # pods of a deleted Node are deleted after this
    evict_pods: bool = True                    # taint-based eviction on NoExecute taints
    leader_elect: bool = True                  # --leader-elect
    lease_duration: float = 15.0               # --leader-elect-lease-duration
    renew_deadline: float = 10.0               # --leader-elect-renew-deadline
    retry_period: float = 2.0                  # --leader-elect-retry-period
    lease_namespace: str = "kube-system"
    identity: str = field(default_factory=default_identity)
    # CSR signing (--cluster-signing-cert-file/--cluster-signing-key-file; unset: no signer)
    cluster_signing_cert_file: str = ""
    cluster_signing_key_file: str = ""
    cluster_signing_duration: float = 365 * 24 * 3600.0
    csr_auto_approve: bool = True              # approve node serving CSRs that pass the SAN checks
    run_scheduler: bool = True
    run_controllers: bool = True
    scheduler_kw: dict = field(default_factory=dict)  # extra Scheduler(...) arguments


async def run_controllers(client: Client, options: Options) -> None:
    """Node IPAM and node lifecycle, until cancelled (what the controller-manager leader runs)."""
    from .nodeipam import NodeIPAMController
    from .nodelifecycle import NodeLifecycleController

    tasks = []
    if options.cluster_cidr:
        ipam = NodeIPAMController(client, options.cluster_cidr, options.node_cidr_mask_size)
        tasks.append(asyncio.create_task(ipam.run(), name="node-ipam-controller"))
    nl = NodeLifecycleController(client, grace_period=options.node_monitor_grace_period,
                                 monitor_period=options.node_monitor_period, evict=options.evict_pods,
                                 orphan_grace=options.orphan_grace)
    tasks.append(asyncio.create_task(nl.run(), name="node-lifecycle-controller"))
    signer = None
    if options.cluster_signing_cert_file and options.cluster_signing_key_file:
        from pathlib import Path

        from .certificates import Signer

        signer = Signer.from_files(Path(options.cluster_signing_cert_file), Path(options.cluster_signing_key_file),
                                   options.cluster_signing_duration)
    if signer is not None or options.csr_auto_approve:
        from .certificates import CertificateController

        csr = CertificateController(client, signer, options.csr_auto_approve)
        tasks.append(asyncio.create_task(csr.run(), name="csr-controller"))
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_scheduler(client: Client, options: Options) -> None:
    from kubeletpy.scheduler import Scheduler

    await Scheduler(client, identity=options.identity, **options.scheduler_kw).run()


async def _elected(client: Client, options: Options, lease: str, work: Callable[[], Awaitable[None]]) -> None:
    if not options.leader_elect:
        await work()
        return
    le = LeaderElector(client, lease, options.lease_namespace, options.identity,
                       lease_duration=options.lease_duration, renew_deadline=options.renew_deadline,
                       retry_period=options.retry_period)
    await le.run(work)


async def run_all(client: Client, options: Options | None = None) -> None:
    """The scheduler and the controllers, each behind its leader Lease, until cancelled.

    `client` should talk to the API server over HTTPS with a token allowed to do
    everything (the admin kubeconfig's, in the control-plane process).
    """
    options = options or Options()
    tasks = []
    if options.run_scheduler:
        tasks.append(asyncio.create_task(_elected(client, options, "kube-scheduler",
                                                  lambda: run_scheduler(client, options)), name="kube-scheduler"))
    if options.run_controllers:
        tasks.append(asyncio.create_task(_elected(client, options, "kube-controller-manager",
                                                  lambda: run_controllers(client, options)),
                                         name="kube-controller-manager"))
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_in_control_plane(kubeconfig: str | os.PathLike[str], options: Options | None = None) -> None:
    """The hook for `kubeletpy control-plane`: run_all against the server's own URL, as the admin
    kubeconfig it just wrote describes (HTTPS, the cluster CA, the admin token), until cancelled."""
    client = Client.from_kubeconfig(kubeconfig, user_agent="kube-controller-manager")
    try:
        await run_all(client, options)
    finally:
        await client.close()


__all__ = ["LeaderElector", "Options", "run_all", "run_controllers", "run_in_control_plane", "run_scheduler"]
