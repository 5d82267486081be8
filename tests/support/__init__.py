"""Harness pieces shared by the test suites and the benchmarks (bench/ puts tests/ on sys.path).

* `process`      -- free ports; starting a subprocess with its output in a log file; stopping it.
* `controlplane` -- a `kubeletpy control-plane` subprocess on a free port with a tmp data dir,
                    waited for, and its admin kubeconfig (URL, token, CA) and HTTPS session.
* `cluster`      -- that API server with simulated Nodes/Leases/pods and an asyncio loop thread,
                    for the scheduler, controllers and etcd suites (fixtures `cp`, `loop`).
* `runtime`      -- a `kubeletpy runtime` CRI daemon on private dirs, waited for on its socket.
* `host`         -- unused pod subnets, and removing what a private runtime's pods left on
                    the host (bridge, NAT rules, cgroups, mounts, dirs).

Other engineers run tests on the same host at the same time: callers name everything they
create uniquely (ports, bridges, subnets, cgroup parents, tmp dirs); these helpers only act
on the names they are given.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
