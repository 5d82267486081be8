"""The node agent: kubeletpy's kubelet.

Data flows one way: API object -> desired state -> CRI calls. The agent never touches
namespaces, mounts of container roots or cgroups of containers itself; it speaks CRI
`runtime.v1` over a unix socket (so it could drive containerd) and the Kubernetes REST API
over HTTPS, through kubeletpy.apiclient (Client + Informer; nothing had to be added).

    config.py      AgentConfig: every knob, with the defaults the kubelet uses
    quantity.py    "100m", "64Mi" -> numbers
    qos.py         QoS class, pod requests/limits, pod cgroup path (rmdir of an empty one after the pod)
    resources.py   container resources -> CRI LinuxContainerResources (shares, quota, memory, oom)
    envvars.py     env / envFrom resolution, $(VAR) expansion
    backoff.py     CrashLoopBackOff bookkeeping
    probes.py      probe state machine (pure) + exec/http/tcp/grpc probers
    admission.py   does the pod fit: cpu, memory, pods, host ports
    status.py      CRI state -> PodStatus (phase, conditions, container statuses), merge diffs
    labels.py      what the agent writes on sandboxes/containers so a restarted agent adopts them
    cri.py         asyncio CRI client (grpc.aio)
    podconfig.py   pod/container spec -> CRI PodSandboxConfig / ContainerConfig
    volumes.py     emptyDir / hostPath / configMap / secret / downwardAPI materialised on disk
    node.py        node object: capacity, nodeInfo, conditions from real measurements
    pleg.py        relist the runtime every second, kick the workers of pods that changed
    events.py      Events, aggregated, posted in the background
    worker.py      one pod: sandbox, init containers, containers, restarts, probes, termination
    agent.py       the loop: informer on pods, workers, admission, status manager, node status,
                   lease, static pods, housekeeping; `connect` (join token -> node credential)
    staticpods.py  manifests directory -> pods + mirror pods
    server.py      HTTPS :10250: logs, exec, attach, port-forward
    gc.py          dead containers and images
"""
