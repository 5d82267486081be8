"""The scheduler: assigns pending pods to nodes over the API server's REST API only.

* `framework`  -- PodInfo / NodeInfo, requests and tolerations (pure, dict in, dict out);
* `plugins`    -- one filter/score per module (unschedulable, node name, taints, ready,
                  node affinity + nodeSelector, host ports, resources);
* `core`       -- one decision and the FailedScheduling message, pure;
* `queue`      -- active / backoff / unschedulable;
* `scheduler`  -- informers, assume-then-bind, conditions and events.

Run it in the control-plane process (`kubeletpy.controllers.run_all`) or on its own:
`python -m kubeletpy.scheduler --kubeconfig /etc/kubeletpy/admin.kubeconfig`.
"""

from .scheduler import DEFAULT_SCHEDULER_NAME, Scheduler

__all__ = ["DEFAULT_SCHEDULER_NAME", "Scheduler"]
