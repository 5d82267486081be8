"""Filter and score plugins, one module each, in the spirit of the scheduling framework.

A filter is `filter(pod: PodInfo, node: NodeInfo) -> list[str]`: the reasons the node
cannot take the pod (Kubernetes' wording, aggregated into the FailedScheduling message),
empty when it can. `RESOLVABLE` says whether evicting pods could ever help (it decides
the "preemption:" half of the message). A score is `score(pod, node) -> int` (0..100
after `normalize`), higher is better.
"""
