"""Pod networking for the CRI server: the CNI config in --cni-conf-dir, run through cni.invoker.

What containerd's CRI plugin does, in-process: the first network config by name
in the conf dir is the pod network; RunPodSandbox runs its ADD chain on the new
netns with the K8S_POD_* args and the `portMappings`/`dns` capability args, and
StopPodSandbox its DEL chain. With no (valid) config the runtime reports
NetworkReady=false / NetworkPluginNotReady, and UpdateRuntimeConfig(pod CIDR) can
write one. The invoker's result cache makes DEL work after a daemon restart.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from cni.invoker import Invoker, NetworkConfig, load_conf_dir, parse_network_config
from cni.netns import open_netns, run_in_netns
from cni.spec import CNIError
from cri.fsutil import atomic_write_json
from cri.runtime.types import NetworkResult, PodSandboxConfig

log = logging.getLogger("kubeletpy.cri.network")

IFNAME = "eth0"
GENERATED_NAME = "10-kubeletpy.conflist"
GENERATED_MARKER = "kubeletpy.io/generated"   # key in the conflist we write; we only overwrite our own
_PROTOCOLS = {0: "tcp", 1: "udp", 2: "sctp"}


class PodNetwork:
    """Loads the CNI config on demand (cached by file mtimes) and runs ADD/DEL for sandboxes."""

    def __init__(self, conf_dir: str | os.PathLike[str], bin_dirs: list[str], cache_dir: str | os.PathLike[str],
                 bridge: str = "kpbr0", ipam_data_dir: str | None = None) -> None:
        self.conf_dir = Path(conf_dir)
        self.invoker = Invoker(bin_dirs=bin_dirs, cache_dir=cache_dir)
        self.bridge = bridge
        self.ipam_data_dir = ipam_data_dir
        self._lock = threading.Lock()
        self._cache: tuple[tuple, NetworkConfig | None, str] | None = None

    # ---- config ----------------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        try:
            entries = sorted(os.scandir(self.conf_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return ()
        out = []
        for e in entries:
            with contextlib.suppress(OSError):
                st = e.stat()
                out.append((e.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def config(self) -> tuple[NetworkConfig | None, str]:
        """(config, "") or (None, why not); re-read only when the directory changed."""
        fp = self._fingerprint()
        with self._lock:
            if self._cache is not None and self._cache[0] == fp:
                return self._cache[1], self._cache[2]
            try:
                net: NetworkConfig | None = load_conf_dir(self.conf_dir)
                why = ""
            except CNIError as e:
                net, why = None, f"cni config load failed: {e}"
            except OSError as e:
                net, why = None, f"cni config load failed: {e}"
            self._cache = (fp, net, why)
            return net, why

    def status(self) -> tuple[bool, str, str]:
        """The NetworkReady condition: (status, reason, message)."""
        net, why = self.config()
        if net is None:
            return False, "NetworkPluginNotReady", f"Network plugin returns error: {why or 'no network config'}"
        return True, "", ""

    def write_pod_cidr(self, cidr: str) -> bool:
        """UpdateRuntimeConfig: write a bridge+host-local+portmap conflist for `cidr`.

        Like containerd with a conf template: only when the directory has no config
        of someone else's (our own generated file is rewritten). Returns whether it wrote.
        """
        try:
            subnet = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            from cri.server.errors import invalid
            raise invalid(f"invalid pod CIDR {cidr!r}") from None
        net, _ = self.config()
        if net is not None and not (net.raw.get(GENERATED_MARKER) and Path(net.source or "").name == GENERATED_NAME):
            log.info("pod CIDR %s: keeping the existing CNI config %s", cidr, net.source)
            return False
        ipam: dict[str, Any] = {"type": "host-local", "ranges": [[{"subnet": str(subnet)}]],
                                "routes": [{"dst": "0.0.0.0/0" if subnet.version == 4 else "::/0"}]}
        if self.ipam_data_dir:
            ipam["dataDir"] = self.ipam_data_dir
        conf = {"cniVersion": "1.0.0", "name": "kubeletpy", GENERATED_MARKER: True, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ]}
        parse_network_config(json.dumps(conf))  # our own output must load
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.conf_dir / GENERATED_NAME, conf)
        return True

    # ---- ADD / DEL ---------------------------------------------------------------------
    @staticmethod
    def _cni_args(sid: str, config: PodSandboxConfig) -> dict[str, str]:
        md = config.metadata
        return {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": md.namespace, "K8S_POD_NAME": md.name,
                "K8S_POD_INFRA_CONTAINER_ID": sid, "K8S_POD_UID": md.uid}

    @staticmethod
    def _capability_args(config: PodSandboxConfig) -> dict[str, Any]:
        caps: dict[str, Any] = {}
        maps = [{"hostPort": p.host_port, "containerPort": p.container_port,
                 "protocol": _PROTOCOLS.get(int(p.protocol), "tcp"), "hostIP": p.host_ip}
                for p in config.port_mappings if p.host_port > 0]   # hostPort 0: nothing to map (containerd too)
        if maps:
            caps["portMappings"] = maps
        dns = config.dns_config
        if dns is not None and (dns.servers or dns.searches or dns.options):
            caps["dns"] = {"servers": list(dns.servers), "searches": list(dns.searches),
                           "options": list(dns.options)}
        return caps

    def setup(self, sid: str, netns: str, config: PodSandboxConfig) -> NetworkResult:
        """The runtime's network hook: pod sysctls in the netns, then CNI ADD; the pod's IPs."""
        net, why = self.config()
        if net is None:
            raise RuntimeError(f"network is not ready: {why or 'no CNI config'}")
        self._net_sysctls(netns, config)
        result = self.invoker.add(net, sid, netns, IFNAME, cni_args=self._cni_args(sid, config),
                                  capability_args=self._capability_args(config))
        return _pod_ips(result)

    @staticmethod
    def _net_sysctls(netns: str, config: PodSandboxConfig) -> None:
        """net.* sysctls belong to the netns: set them before the plugins run, as the pause container would."""
        items = [(k, v) for k, v in config.linux.sysctls.items() if k.startswith("net.")]
        if not items:
            return
        fd = open_netns(netns)
        try:
            def apply() -> None:
                for k, v in items:
                    # /proc/sys/net resolves to the opening thread's netns: this thread's
                    with open("/proc/sys/" + k.replace(".", "/"), "w") as f:
                        f.write(v)
            try:
                run_in_netns(fd, apply)
            except OSError as e:
                from cri.runtime.errors import InvalidArgument
                raise InvalidArgument(f"sysctl: {e}") from None
        finally:
            os.close(fd)

    def teardown(self, sid: str, netns: str, config: PodSandboxConfig) -> None:
        """CNI DEL with the config the ADD used (from the result cache), so a changed conf dir can't strand it."""
        net, _ = self.config()
        entry = None
        if net is not None:
            entry = self.invoker.cached(net.name, sid, IFNAME)
        if entry is None:
            entry = next((e for e in self._all_cached() if e.get("containerId") == sid), None)
        if entry is not None and entry.get("config"):
            with contextlib.suppress(CNIError):
                net = parse_network_config(json.dumps(entry["config"]))
        if net is None:
            return  # nothing was ever added (no config then, none now)
        path = netns if netns and os.path.exists(netns) else ""
        self.invoker.delete(net, sid, path, IFNAME)

    def _all_cached(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for p in self.invoker.cache_dir.iterdir():
                with contextlib.suppress(OSError, ValueError):
                    out.append(json.loads(p.read_text()))
        return out


def _pod_ips(result: dict[str, Any]) -> NetworkResult:
    ifaces = result.get("interfaces") or []
    ips: list[str] = []
    for ip in result.get("ips") or []:
        i = ip.get("interface")
        if i is not None and not (0 <= i < len(ifaces) and ifaces[i].get("sandbox")):
            continue
        ips.append(str(ipaddress.ip_interface(ip["address"]).ip))
    ips.sort(key=lambda a: ipaddress.ip_address(a).version)  # IPv4 first, as the kubelet expects
    return NetworkResult(ip=ips[0] if ips else "", additional_ips=ips[1:])
