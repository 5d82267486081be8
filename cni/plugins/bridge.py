"""``bridge``: a Linux bridge on the host, one veth pair per attachment.

Config keys: ``bridge`` (default ``kpbr0``), ``isGateway``, ``isDefaultGateway``,
``ipMasq``, ``mtu`` (default: the uplink's, i.e. the default route's device),
``hairpinMode``, ``promiscMode``, ``ipam``, ``dns``; kubeletpy extension
``firewallBackend`` ("nftables" | "iptables", default: nftables, else iptables).

Why the steps are in this order (ADD):
1. everything that can fail without side effects first — config, netns — so a
   bad request creates nothing;
2. IPAM next, *before* the bridge exists, so an exhausted range leaves no
   bridge/veth behind (host-local also refuses a second ADD for the same
   container+ifname here, before allocating);
3. the veth is created with its peer directly inside the pod namespace under
   its final name (one netlink request, no rename); the host end has a name
   derived from (network, container, ifname), so DEL finds it even without a
   netns or prevResult;
4. any failure after IPAM undoes veth + firewall and calls IPAM DEL, as the
   delegation section of the spec requires.

With ``isGateway`` the pod also gets a default route via the bridge address
(unless the IPAM routes already carry a default route for that family).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cni import firewall
from cni.netns import (
    drop_host_iproute,
    host_iproute,
    host_rtnl,
    if_flags,
    if_index,
    if_mac,
    if_set_up,
    iproute,
    netns_sockets,
    open_netns,
    read_sysctl,
    write_sysctl,
)
from cni.plugins import delegate_ipam
from cni.rtnl import NetlinkError, RtnlSocket
from cni.spec import ERR_CHECK_FAILED, ERR_EXISTS, ERR_INVALID_CONFIG, CNIArgs, CNIError

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute

DEFAULT_BRIDGE = "kpbr0"
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class BridgeConf:
    network: str
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    ip_masq: bool
    mtu: int | None
    hairpin: bool
    promisc: bool
    firewall: str | None


def parse_conf(conf: Mapping[str, Any]) -> BridgeConf:
    """Validate the bridge keys; errors are code 7 and nothing has been touched yet."""
    def flag(key: str) -> bool:
        v = conf.get(key, False)
        if not isinstance(v, bool):
            raise CNIError(ERR_INVALID_CONFIG, f"invalid {key}", f"{key} must be true or false, got {v!r}")
        return v

    bridge = conf.get("bridge") or DEFAULT_BRIDGE
    if not isinstance(bridge, str) or len(bridge) > 15 or "/" in bridge or any(c.isspace() for c in bridge):
        raise CNIError(ERR_INVALID_CONFIG, "invalid bridge name", repr(bridge))
    mtu = conf.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
        raise CNIError(ERR_INVALID_CONFIG, "invalid mtu", f"mtu={mtu!r}")
    fw = conf.get("firewallBackend")
    if fw not in (None, "nftables", "iptables"):
        raise CNIError(ERR_INVALID_CONFIG, "invalid firewallBackend", f"{fw!r}: use \"nftables\" or \"iptables\"")
    if not isinstance(conf.get("ipam"), Mapping) or not conf["ipam"].get("type"):
        raise CNIError(ERR_INVALID_CONFIG, "missing IPAM configuration", "the bridge plugin needs an 'ipam' section with a 'type'")
    is_default_gw = flag("isDefaultGateway")
    return BridgeConf(
        network=conf["name"], bridge=bridge, is_gateway=flag("isGateway") or is_default_gw,
        is_default_gateway=is_default_gw, ip_masq=flag("ipMasq"), mtu=mtu, hairpin=flag("hairpinMode"),
        promisc=flag("promiscMode"), firewall=fw,
    )


def host_veth_name(network: str, container_id: str, ifname: str) -> str:
    """Deterministic host-side name (14 chars): DEL and CHECK can find it from the args alone."""
    return "kpv" + firewall.attachment_key(network, container_id, ifname)[:11]


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name) if hasattr(msg, "get_attr") else msg.get(name)


def _link(ipr: IPRoute, name: str) -> Any | None:
    try:
        links = ipr.link("get", ifname=name)
    except Exception as e:  # NetlinkError ENODEV
        if getattr(e, "code", None) == errno.ENODEV:
            return None
        raise
    return links[0] if links else None


def _kind(link: Any) -> str | None:
    info = _attr(link, "IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _ignore_exists(fn: Any, *a: Any, **kw: Any) -> None:
    try:
        fn(*a, **kw)
    except Exception as e:
        if getattr(e, "code", None) != errno.EEXIST:
            raise


class _Exists(CNIError):
    """ADD found its interface name taken: nothing of ours to undo besides IPAM."""


_gw_cache: dict[tuple[int, str], float] = {}
GW_CACHE_SECONDS = 5.0


def _ensure_gateway_address(host: IPRoute, bridge_index: int, address: str, prefixlen: int, version: int) -> None:
    """Put the gateway address on the bridge; skipped if this process did so moments ago
    (a burst of pod starts would otherwise pay a netlink round trip per pod for EEXIST)."""
    key = (bridge_index, f"{address}/{prefixlen}")
    now = time.monotonic()
    if now - _gw_cache.get(key, 0.0) < GW_CACHE_SECONDS:
        return
    _ignore_exists(host.addr, "add", index=bridge_index, address=address, prefixlen=prefixlen,
                   **({"flags": IFA_F_NODAD} if version == 6 else {}))
    _gw_cache[key] = now


def _random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel would pick)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)


class _BridgeLink(dict):
    """The two facts ADD needs of an existing bridge, shaped like the netlink message."""

    def get_attr(self, name: str) -> Any:
        return self.get(name)


_host_sock: socket.socket | None = None


def _bridge_fast(c: BridgeConf) -> _BridgeLink | None:
    """An existing, up bridge by ioctls (index, flags, MAC) and sysfs (is it a bridge):
    every ADD but the first one finds it so, and an RTM_GETLINK of a bridge decoded by
    pyroute2 costs more CPU than all of these. None: take the netlink path."""
    global _host_sock
    if c.promisc:
        return None
    try:
        if _host_sock is None:
            _host_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        s = _host_sock
        idx = if_index(s, c.bridge)
        if not os.path.isdir(f"/sys/class/net/{c.bridge}/bridge") or not if_flags(s, c.bridge) & 1:
            return None
        mac = if_mac(s, c.bridge)
        if if_index(s, c.bridge) != idx:  # replaced meanwhile: let netlink sort it out
            return None
    except OSError:
        return None
    return _BridgeLink(index=idx, IFLA_ADDRESS=mac)


def ensure_bridge(host: IPRoute, c: BridgeConf) -> Any:
    """Create the bridge if missing (tolerating a concurrent creator); bring it up; return the link."""
    fast = _bridge_fast(c)
    if fast is not None:
        return fast
    link = _link(host, c.bridge)
    if link is None:
        # A fixed MAC: otherwise the bridge takes the lowest port MAC, which changes as
        # pods come and go and leaves stale gateway entries in the pods' ARP caches.
        _ignore_exists(host.link, "add", ifname=c.bridge, kind="bridge", address=_random_mac())
        link = _link(host, c.bridge)
    if link is None or _kind(link) != "bridge":
        raise CNIError(ERR_INVALID_CONFIG, "bridge name is taken", f"{c.bridge} exists and is not a bridge")
    want = 1 | (IFF_PROMISC if c.promisc else 0)
    if link["flags"] & want != want:
        host.link("set", index=link["index"], state="up",
                  **({"flags": want, "change": IFF_PROMISC | 1} if c.promisc else {}))
    return link


_uplink_cache: tuple[float, int] = (0.0, 0)
UPLINK_CACHE_SECONDS = 10.0


def uplink_mtu(host: IPRoute) -> int:
    """MTU of the device carrying the IPv4 default route (1500 if there is none).

    Cached for a few seconds: a route dump costs more than the rest of an ADD,
    and the uplink's MTU does not change between two pods started together.
    """
    global _uplink_cache
    now = time.monotonic()
    if now - _uplink_cache[0] < UPLINK_CACHE_SECONDS:
        return _uplink_cache[1]
    mtu = 1500
    for r in host.route("dump", family=socket.AF_INET, table=254):
        if r["dst_len"] == 0 and r.get_attr("RTA_OIF"):
            mtu = int(host.link("get", index=r.get_attr("RTA_OIF"))[0].get_attr("IFLA_MTU"))
            break
    _uplink_cache = (now, mtu)
    return mtu


def _enable_forwarding(versions: set[int]) -> None:
    for v, path in ((4, "/proc/sys/net/ipv4/ip_forward"), (6, "/proc/sys/net/ipv6/conf/all/forwarding")):
        if v in versions and read_sysctl(path) == "0":
            write_sysctl(path, "1")


def _route_add(ns: RtnlSocket, index: int, dst: str, gw: str | None) -> None:
    _ignore_exists(ns.add_route, ipaddress.ip_network(dst, strict=False), gw, index)


def add(conf: Mapping[str, Any], args: CNIArgs) -> dict[str, Any]:
    """ADD: see the module docstring for why the steps come in this order."""
    c = parse_conf(conf)
    nsfd = open_netns(args.netns)
    try:
        nss, ns = netns_sockets(nsfd)
        try:
            host = host_iproute()
            # No "does CNI_IFNAME exist" lookup up front: a second ADD is refused by
            # host-local's owner index before anything is allocated, and any other
            # name clash makes the veth creation fail with EEXIST -> rolled back below.
            ipam = delegate_ipam("ADD", conf, args) or {}
            if not ipam.get("ips"):
                delegate_ipam("DEL", conf, args)
                raise CNIError(ERR_INVALID_CONFIG, "IPAM returned no addresses", repr(ipam))
            try:
                return _add(c, conf, args, nsfd, nss, ns, host, ipam)
            except BaseException as e:  # roll back so a failed ADD leaves no veth, rule or lease
                if not isinstance(e, _Exists):  # the clashing veth is someone else's
                    with contextlib.suppress(Exception):
                        _undo(c, args, host)
                with contextlib.suppress(CNIError):
                    delegate_ipam("DEL", conf, args)
                raise
        except NetlinkError:
            raise  # the kernel said no to a request: the sockets themselves are fine
        except OSError:
            drop_host_iproute()  # a broken socket must not be reused by the next call
            raise
        finally:
            ns.close()
            nss.close()
    finally:
        os.close(nsfd)


def _add(c: BridgeConf, conf: Mapping[str, Any], args: CNIArgs, nsfd: int, nss: socket.socket, ns: RtnlSocket,
         host: IPRoute, ipam: dict[str, Any]) -> dict[str, Any]:
    """The steps in order; the three netlink writes go through cni.rtnl (see there for why)."""
    br = ensure_bridge(host, c)
    mtu = c.mtu or uplink_mtu(host)
    veth = host_veth_name(c.network, args.container_id, args.ifname)
    # One request: both ends, MTU, bridge port, host end up, pod end born in the netns.
    host_mac = _random_mac()  # chosen here, so no request is needed to learn it
    try:
        host_rtnl().add_veth(veth, host_mac, mtu, br["index"], args.ifname, nsfd)
    except Exception as e:
        if getattr(e, "code", None) != errno.EEXIST:
            raise
        # Nothing was created; say which name clashes (the rollback must not delete theirs).
        clash = f"host interface {veth}" if host.link_lookup(ifname=veth) else f"{args.ifname} in {args.netns}"
        raise _Exists(ERR_EXISTS, "interface already exists", f"{clash} (a second ADD for {args.container_id}?)") from None
    # The host end is a bridge port, L2 only: without this it gets an IPv6
    # link-local address and multicast state whose teardown makes DEL ~2x slower
    # on a bridge with hundreds of ports. Pod IPv6 is bridged as before.
    with contextlib.suppress(FileNotFoundError):
        write_sysctl(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6", "1")
    if c.hairpin:
        with open(f"/sys/class/net/{veth}/brport/hairpin_mode", "w") as f:
            f.write("1")

    # ioctls instead of RTM_GETLINK/SETLINK built and decoded in Python
    cidx, cmac = if_index(nss, args.ifname), if_mac(nss, args.ifname)
    if_set_up(nss, args.ifname, True)
    ips = [ipaddress.ip_interface(i["address"]) for i in ipam["ips"]]
    gateways: dict[int, str] = {}
    for entry, ipi in zip(ipam["ips"], ips, strict=True):
        ns.add_address(cidx, ipi, IFA_F_NODAD if ipi.version == 6 else 0)
        if entry.get("gateway"):
            gateways.setdefault(ipi.version, entry["gateway"])
    routes = [dict(r) for r in ipam.get("routes", [])]
    for r in routes:
        v = ipaddress.ip_network(r["dst"], strict=False).version
        _route_add(ns, cidx, r["dst"], r.get("gw") or gateways.get(v))
    if c.is_gateway:
        have_default = {ipaddress.ip_network(r["dst"], strict=False).version for r in routes
                        if ipaddress.ip_network(r["dst"], strict=False).prefixlen == 0}
        for v, gw in gateways.items():
            if v not in have_default:
                dst = "0.0.0.0/0" if v == 4 else "::/0"
                _route_add(ns, cidx, dst, gw)
                routes.append({"dst": dst, "gw": gw})
        for ipi, entry in zip(ips, ipam["ips"], strict=True):
            if entry.get("gateway"):
                _ensure_gateway_address(host, br["index"], entry["gateway"], ipi.network.prefixlen, ipi.version)
        _enable_forwarding(set(gateways))
    if c.ip_masq:
        firewall.get_backend(c.firewall).ensure_masq(
            firewall.attachment_key(c.network, args.container_id, args.ifname), ips, c.network)

    result: dict[str, Any] = {
        "cniVersion": conf["cniVersion"],
        "interfaces": [
            {"name": c.bridge, "mac": br.get_attr("IFLA_ADDRESS")},
            {"name": veth, "mac": host_mac},
            {"name": args.ifname, "mac": cmac, "mtu": mtu, "sandbox": args.netns},
        ],
        "ips": [dict(i, interface=2) for i in ipam["ips"]],
        "routes": routes,
    }
    dns = conf.get("dns") or ipam.get("dns")
    if dns:
        result["dns"] = dict(dns)
    prev = conf.get("prevResult")
    if prev:  # chained after e.g. loopback: keep what came before, ours appended (spec: pass it on)
        base = len(prev.get("interfaces", []))
        result["interfaces"] = list(prev.get("interfaces", [])) + result["interfaces"]
        result["ips"] = list(prev.get("ips", [])) + [dict(i, interface=i["interface"] + base) for i in result["ips"]]
        result["routes"] = list(prev.get("routes", [])) + result["routes"]
        if "dns" not in result and prev.get("dns"):
            result["dns"] = dict(prev["dns"])
    return result


def _del_link(ipr: IPRoute, name: str, kind: str | None = None) -> bool:
    """Delete link ``name`` (only if it is of ``kind``, when given); False if it was not there."""
    try:
        if kind is not None:
            link = _link(ipr, name)
            if link is None or _kind(link) != kind:
                return False
        ipr.link("del", ifname=name)
        return True
    except Exception as e:
        if getattr(e, "code", None) == errno.ENODEV:
            return False
        raise


def _undo(c: BridgeConf, args: CNIArgs, host: IPRoute) -> bool:
    """Remove this attachment's host veth (its pod end goes with it) and NAT rules; idempotent.

    Returns whether a veth was deleted. One request for the veth: right after a
    veth deletion the kernel is still busy and every further rtnetlink request
    waits, so DEL avoids lookups it does not need.
    """
    deleted = _del_link(host, host_veth_name(c.network, args.container_id, args.ifname))
    if c.ip_masq:
        firewall.get_backend(c.firewall).remove_masq(firewall.attachment_key(c.network, args.container_id, args.ifname))
    return deleted


def delete(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """Release IPAM, then remove the veth and NAT rules; a missing netns or veth is success."""
    c = parse_conf(conf)
    ipam_error: CNIError | None = None
    try:
        delegate_ipam("DEL", conf, args)
    except CNIError as e:  # still clean up our own resources, then report
        ipam_error = e
    try:
        host = host_iproute()
        if not _undo(c, args, host):
            _delete_foreign_veth(c, conf, args, host)
    except OSError:
        drop_host_iproute()
        raise
    if ipam_error is not None:
        raise ipam_error


def _delete_foreign_veth(c: BridgeConf, conf: Mapping[str, Any], args: CNIArgs, host: IPRoute) -> None:
    """No veth under our derived name: the attachment was made by another bridge
    plugin (its host veth is named in prevResult) or is already gone; as a last
    resort remove a veth called CNI_IFNAME inside the netns, if that still exists."""
    own = host_veth_name(c.network, args.container_id, args.ifname)
    for iface in (conf.get("prevResult") or {}).get("interfaces", []):
        if not iface.get("sandbox") and iface.get("name") not in (c.bridge, own, None):
            _del_link(host, iface["name"], kind="veth")
    if not args.netns:
        return
    try:
        nsfd = open_netns(args.netns)
    except CNIError:
        return  # namespace already gone: nothing left inside it
    try:
        ns = iproute(nsfd)
        try:
            _del_link(ns, args.ifname, kind="veth")
        finally:
            ns.close()
    finally:
        os.close(nsfd)


def check(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """Verify interface, MAC, addresses, routes, bridge port and NAT against prevResult."""
    c = parse_conf(conf)
    prev = conf.get("prevResult")
    if not prev:
        raise CNIError(ERR_INVALID_CONFIG, "CHECK needs prevResult", "the runtime must pass the ADD result")

    def fail(what: str) -> CNIError:
        return CNIError(ERR_CHECK_FAILED, "bridge CHECK failed", what)

    ifaces = prev.get("interfaces", [])
    cont = next((i for i, x in enumerate(ifaces) if x.get("name") == args.ifname and x.get("sandbox")), None)
    if cont is None:
        raise fail(f"prevResult has no sandbox interface {args.ifname}")
    nsfd = open_netns(args.netns)
    try:
        ns = iproute(nsfd)
        try:
            link = _link(ns, args.ifname)
            if link is None:
                raise fail(f"{args.ifname} is missing in {args.netns}")
            if ifaces[cont].get("mac") and link.get_attr("IFLA_ADDRESS") != ifaces[cont]["mac"].lower():
                raise fail(f"{args.ifname} has MAC {link.get_attr('IFLA_ADDRESS')}, expected {ifaces[cont]['mac']}")
            if not link["flags"] & 1:
                raise fail(f"{args.ifname} is down")
            have = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ns.addr("dump", index=link["index"])}
            for ip in prev.get("ips", []):
                if ip.get("interface") == cont and str(ipaddress.ip_interface(ip["address"])) not in have:
                    raise fail(f"address {ip['address']} missing on {args.ifname}")
            dsts = set()
            for fam in (socket.AF_INET, socket.AF_INET6):
                for r in ns.route("dump", family=fam, table=254):
                    dsts.add(str(ipaddress.ip_network(f"{r.get_attr('RTA_DST') or ('0.0.0.0' if fam == socket.AF_INET else '::')}/{r['dst_len']}")))
            for r in prev.get("routes", []):
                if str(ipaddress.ip_network(r["dst"], strict=False)) not in dsts:
                    raise fail(f"route to {r['dst']} missing in {args.netns}")
        finally:
            ns.close()
    finally:
        os.close(nsfd)
    host = host_iproute()
    br = _link(host, c.bridge)
    if br is None:
        raise fail(f"bridge {c.bridge} is missing")
    veth = _link(host, host_veth_name(c.network, args.container_id, args.ifname))
    if veth is None or veth.get_attr("IFLA_MASTER") != br["index"]:
        raise fail("host veth missing or not attached to the bridge")
    if c.ip_masq and not firewall.get_backend(c.firewall).has_masq(
            firewall.attachment_key(c.network, args.container_id, args.ifname)):
        raise fail("masquerade rules are missing")
    delegate_ipam("CHECK", conf, args)


def gc(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """GC: masquerade rules of attachments not in ``cni.dev/valid-attachments``, then IPAM.

    Host veths need no GC: they die with the pod's netns. Rules are skipped when
    the invoker's live-container extension is present (startup repair), since a
    live pod whose cache entry was lost cannot be told apart from a dead one.
    """
    c = parse_conf(conf)
    if c.ip_masq and "kubeletpy.io/live-container-ids" not in conf:
        valid = {firewall.attachment_key(c.network, a.get("containerID", ""), a.get("ifname", ""))
                 for a in conf.get("cni.dev/valid-attachments", [])}
        firewall.get_backend(c.firewall).gc("masq", c.network, valid)
    delegate_ipam("GC", conf, args)


def status(conf: Mapping[str, Any], args: CNIArgs) -> None:
    parse_conf(conf)
    delegate_ipam("STATUS", conf, args)
