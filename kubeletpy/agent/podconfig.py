"""Pod and container specs -> CRI PodSandboxConfig / ContainerConfig protobufs.

Everything the runtime needs is in these messages (the runtime never reads the API), and
everything a restarted agent needs to adopt the result is in their labels/annotations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cri.api import api_pb2 as pb
from kubeletpy.agent import labels as L
from kubeletpy.agent import qos, resources

_PROTO = {"TCP": pb.TCP, "UDP": pb.UDP, "SCTP": pb.SCTP}
_PROPAGATION = {"None": pb.PROPAGATION_PRIVATE, "HostToContainer": pb.PROPAGATION_HOST_TO_CONTAINER,
                "Bidirectional": pb.PROPAGATION_BIDIRECTIONAL}
READ_ONLY_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")


def log_directory(log_root: Path, pod: dict[str, Any]) -> str:
    md = pod.get("metadata") or {}
    return str(log_root / f"{md.get('namespace')}_{md.get('name')}_{md.get('uid')}")


def host_dns(path: str = "/etc/resolv.conf") -> tuple[list[str], list[str], list[str]]:
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    try:
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if not parts or parts[0].startswith(("#", ";")):
                continue
            if parts[0] == "nameserver" and len(parts) > 1:
                servers.append(parts[1])
            elif parts[0] in ("search", "domain"):
                searches = parts[1:]
            elif parts[0] == "options":
                options.extend(parts[1:])
    except OSError:
        pass
    return servers, searches, options


def dns_config(spec: dict[str, Any]) -> pb.DNSConfig | None:
    """No cluster DNS exists here, so ClusterFirst behaves like Default (the host's
    resolv.conf, as the kubelet does without --cluster-dns); None uses only dnsConfig."""
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if spec.get("hostNetwork") and policy != "None":
        return None
    servers, searches, options = ([], [], []) if policy == "None" else host_dns()
    extra = spec.get("dnsConfig") or {}
    servers = servers + [s for s in extra.get("nameservers") or [] if s not in servers]
    searches = searches + [s for s in extra.get("searches") or [] if s not in searches]
    for o in extra.get("options") or []:
        options.append(o["name"] + (f":{o['value']}" if o.get("value") else ""))
    if not (servers or searches or options):
        return None
    return pb.DNSConfig(servers=servers, searches=searches, options=options)


def namespace_options(spec: dict[str, Any]) -> pb.NamespaceOption:
    return pb.NamespaceOption(
        network=pb.NODE if spec.get("hostNetwork") else pb.POD,
        pid=pb.NODE if spec.get("hostPID") else (pb.POD if spec.get("shareProcessNamespace") else pb.CONTAINER),
        ipc=pb.NODE if spec.get("hostIPC") else pb.POD)


def _lr(r: resources.LinuxResources) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(cpu_shares=r.cpu_shares, cpu_quota=r.cpu_quota, cpu_period=r.cpu_period,
                                      memory_limit_in_bytes=r.memory_limit_in_bytes, oom_score_adj=r.oom_score_adj)


def sandbox_config(pod: dict[str, Any], attempt: int, log_root: Path, cgroup_root: str) -> pb.PodSandboxConfig:
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    ports = []
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                ports.append(pb.PortMapping(protocol=_PROTO.get(p.get("protocol", "TCP"), pb.TCP),
                                            container_port=int(p["containerPort"]), host_port=int(p["hostPort"]),
                                            host_ip=p.get("hostIP", "")))
    hostname = spec.get("hostname") or md.get("name", "")
    if spec.get("hostNetwork"):
        import socket

        hostname = socket.gethostname()
    sc = pb.LinuxSandboxSecurityContext(namespace_options=namespace_options(spec),
                                        supplemental_groups=[int(g) for g in psc.get("supplementalGroups") or []])
    if psc.get("runAsUser") is not None:
        sc.run_as_user.value = int(psc["runAsUser"])
    if psc.get("runAsGroup") is not None:
        sc.run_as_group.value = int(psc["runAsGroup"])
    cpu_req, _ = qos.pod_requests(pod)
    cpu_lim, mem_lim = qos.pod_limits(pod)
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=md.get("name", ""), uid=md.get("uid", ""),
                                       namespace=md.get("namespace", ""), attempt=attempt),
        hostname=hostname[:63], log_directory=log_directory(log_root, pod), port_mappings=ports,
        labels=L.pod_labels(pod),
        annotations={str(k): str(v) for k, v in (md.get("annotations") or {}).items()},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=qos.pod_cgroup_parent(pod, cgroup_root), security_context=sc,
            sysctls={s["name"]: str(s.get("value", "")) for s in psc.get("sysctls") or []},
            resources=_lr(resources.pod_resources(cpu_req, cpu_lim, mem_lim))))
    dns = dns_config(spec)
    if dns is not None:
        cfg.dns_config.CopyFrom(dns)
    return cfg


def mounts(container: dict[str, Any], pod: dict[str, Any], volume_paths: dict[str, Path]) -> list[pb.Mount]:
    vols = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    out = []
    for vm in container.get("volumeMounts") or []:
        name = vm.get("name", "")
        if name not in volume_paths:
            raise KeyError(f'volume "{name}" not set up')
        host = volume_paths[name]
        if vm.get("subPath"):
            host = host / vm["subPath"]
            if not host.exists():
                host.mkdir(parents=True, exist_ok=True)
        vol = vols.get(name) or {}
        ro = bool(vm.get("readOnly")) or any(k in vol for k in READ_ONLY_VOLUMES)
        out.append(pb.Mount(container_path=vm.get("mountPath", ""), host_path=str(host), readonly=ro,
                            propagation=_PROPAGATION.get(vm.get("mountPropagation") or "None",
                                                         pb.PROPAGATION_PRIVATE)))
    return out


def security_context(container: dict[str, Any], pod: dict[str, Any]) -> pb.LinuxContainerSecurityContext:
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    csc = container.get("securityContext") or {}
    caps = csc.get("capabilities") or {}
    privileged = bool(csc.get("privileged"))
    sc = pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=list(caps.get("add") or []),
                                   drop_capabilities=list(caps.get("drop") or [])),
        privileged=privileged, namespace_options=namespace_options(spec),
        readonly_rootfs=bool(csc.get("readOnlyRootFilesystem")),
        supplemental_groups=[int(g) for g in psc.get("supplementalGroups") or []],
        no_new_privs=csc.get("allowPrivilegeEscalation") is False)
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    if uid is not None:
        sc.run_as_user.value = int(uid)
    if gid is not None:
        sc.run_as_group.value = int(gid)
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {})
    st = seccomp.get("type")
    if st == "RuntimeDefault":
        sc.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    elif st == "Localhost":
        sc.seccomp.profile_type = pb.SecurityProfile.Localhost
        sc.seccomp.localhost_ref = seccomp.get("localhostProfile", "")
    return sc


def container_config(pod: dict[str, Any], container: dict[str, Any], kind: str, restart_count: int,
                     env: list[tuple[str, str]], volume_paths: dict[str, Path], memory_capacity: int,
                     image: str, target_id: str = "") -> pb.ContainerConfig:
    """`target_id`: an ephemeral container's targetContainerName, resolved to that container's
    current CRI id -- it joins the target's PID namespace (NamespaceMode.TARGET) to see its processes."""
    from kubeletpy.agent.envvars import command_and_args

    name = container.get("name", "")
    spec = pod.get("spec") or {}
    envd = dict(env)
    command, args = command_and_args(container, envd)
    q = qos.qos_class(pod)
    res = resources.container_resources(container, q, memory_capacity)
    annotations = {
        L.RESTART_COUNT: str(restart_count), L.CONTAINER_HASH: L.container_hash(container),
        L.GRACE_PERIOD: str(spec.get("terminationGracePeriodSeconds", 30)),
        L.TERMINATION_MESSAGE_PATH: container.get("terminationMessagePath") or "/dev/termination-log",
    }
    sc = security_context(container, pod)
    if target_id:
        sc.namespace_options.pid = pb.TARGET
        sc.namespace_options.target_id = target_id
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=restart_count),
        image=pb.ImageSpec(image=image),
        command=command, args=args, working_dir=container.get("workingDir", ""),
        envs=[pb.KeyValue(key=k, value=v) for k, v in env],
        mounts=mounts(container, pod, volume_paths),
        labels=L.container_labels(pod, name, kind), annotations=annotations,
        log_path=f"{name}/{restart_count}.log",
        stdin=bool(container.get("stdin")), stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=pb.LinuxContainerConfig(resources=_lr(res), security_context=sc))
