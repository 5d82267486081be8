"""``portmap``: forward host ports to the pod (chained after an interface plugin).

Input: ``runtimeConfig.portMappings`` (capability ``portMappings``):
``[{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "..."}]``
and the ``prevResult`` carrying the pod addresses. Rules live in per-attachment
chains (see :mod:`cni.firewall`) so DEL removes exactly them, even without a
prevResult. ``snat`` (default true) adds the masquerade that makes the port
reachable from the host itself (127.0.0.1, with ``route_localnet`` on the host
interfaces of the attachment) and from the pod itself (hairpin), as the
reference plugin does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Mapping
from typing import Any

from cni import firewall
from cni.netns import write_sysctl
from cni.spec import ERR_CHECK_FAILED, ERR_INVALID_CONFIG, CNIArgs, CNIError

PROTOCOLS = ("tcp", "udp", "sctp")


def _bad(details: str) -> CNIError:
    return CNIError(ERR_INVALID_CONFIG, "invalid portmap configuration", details)


def _port(m: Mapping[str, Any], key: str) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
        raise _bad(f"{key} must be 1-65535, got {v!r}")
    return v


def mappings(conf: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = (conf.get("runtimeConfig") or {}).get("portMappings") or []
    if not isinstance(raw, list):
        raise _bad("runtimeConfig.portMappings must be a list")
    out = []
    for m in raw:
        if not isinstance(m, Mapping):
            raise _bad(f"port mapping {m!r} is not an object")
        proto = str(m.get("protocol") or "tcp").lower()
        if proto not in PROTOCOLS:
            raise _bad(f"protocol {proto!r} not one of {PROTOCOLS}")
        host_ip = m.get("hostIP") or None
        if host_ip is not None:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise _bad(f"hostIP {host_ip!r} is not an IP address") from None
            if ipaddress.ip_address(host_ip).is_unspecified:
                host_ip = None  # 0.0.0.0 / :: means "every local address"
        out.append({"hostPort": _port(m, "hostPort"), "containerPort": _port(m, "containerPort"),
                    "protocol": proto, "hostIP": host_ip})
    return out


def _pod_ips(prev: Mapping[str, Any]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    ifaces = prev.get("interfaces", [])
    out = []
    for ip in prev.get("ips", []):
        i = ip.get("interface")
        addr = ipaddress.ip_interface(ip["address"]).ip
        if addr.is_loopback:  # from a loopback plugin earlier in the chain
            continue
        if i is None or (0 <= i < len(ifaces) and ifaces[i].get("sandbox")):
            out.append(addr)
    return out


def _key(conf: Mapping[str, Any], args: CNIArgs) -> str:
    return firewall.attachment_key(conf["name"], args.container_id, args.ifname)


def add(conf: Mapping[str, Any], args: CNIArgs) -> dict[str, Any]:
    """Install the DNAT (+ masquerade) rules for every mapping x pod address of its family;
    prevResult passes through unchanged (portmap adds no interface or address)."""
    maps = mappings(conf)
    prev = conf.get("prevResult")
    if not prev:
        raise _bad("portmap must be chained after an interface plugin: missing prevResult")
    if not maps:
        return dict(prev)
    pod_ips = _pod_ips(prev)
    rules = []
    for m in maps:
        fam = ipaddress.ip_address(m["hostIP"]).version if m["hostIP"] else None
        for ip in pod_ips:
            if fam is None or ip.version == fam:
                rules.append(firewall.PortMap(m["protocol"], m["hostPort"], ip, m["containerPort"], m["hostIP"]))
    if not rules:
        raise _bad("no pod address matches the address family of the port mappings")
    snat = conf.get("snat", True)
    if not isinstance(snat, bool):
        raise _bad(f"snat must be true or false, got {snat!r}")
    backend = firewall.get_backend(conf.get("firewallBackend"))  # validated before touching anything
    if snat:
        for iface in prev.get("interfaces", []):
            if not iface.get("sandbox") and iface.get("name"):
                with contextlib.suppress(FileNotFoundError):
                    write_sysctl(f"/proc/sys/net/ipv4/conf/{iface['name']}/route_localnet", "1")
    backend.ensure_portmap(_key(conf, args), rules, snat, conf["name"])
    _flush_udp([(r.pod_ip.version, r.host_port) for r in rules if r.protocol == "udp"])
    return dict(prev)


def _flush_udp(ports: list[tuple[int, int]]) -> None:
    """Stale UDP conntrack entries would bypass the new (or removed) DNAT: drop them."""
    try:
        firewall.flush_udp_conntrack(ports)
    except Exception as e:  # never fail an ADD/DEL over it; say so on stderr
        sys.stderr.write(f"portmap: conntrack flush failed: {e}\n")


def delete(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """Remove this attachment's chains (derived from the args: no prevResult needed)."""
    maps = mappings(conf)
    firewall.get_backend(conf.get("firewallBackend")).remove_portmap(_key(conf, args))
    _flush_udp([(v, m["hostPort"]) for m in maps if m["protocol"] == "udp" for v in (4, 6)])


def check(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """Firewall rules are state the Result type does not track: the spec asks CHECK to verify them."""
    if mappings(conf) and not firewall.get_backend(conf.get("firewallBackend")).has_portmap(_key(conf, args)):
        raise CNIError(ERR_CHECK_FAILED, "portmap CHECK failed", "host port rules are missing")


def gc(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """GC: drop host-port rules of this network's attachments not in ``cni.dev/valid-attachments``
    (skipped during the invoker's startup repair, see :func:`cni.plugins.bridge.gc`)."""
    if "kubeletpy.io/live-container-ids" in conf:
        return
    valid = {firewall.attachment_key(conf["name"], a.get("containerID", ""), a.get("ifname", ""))
             for a in conf.get("cni.dev/valid-attachments", [])}
    firewall.get_backend(conf.get("firewallBackend")).gc("portmap", conf["name"], valid)
