"""``host-local`` IPAM: addresses from configured ranges, leases as files on this host.

State layout (compatible with the reference plugin's, so either can read it):
``<dataDir>/<network>/<ip>`` holds ``<containerID>\\r\\n<ifname>``;
``last_reserved_ip.<set>`` remembers where round-robin continues; ``lock`` is
flock'ed for every mutation. One file per IP created with O_EXCL under a
directory-wide exclusive lock means concurrent ADDs from many processes never
hand out the same address, and a crashed holder's lock is released by the kernel.

Config (``ipam`` section): either ``subnet`` (+ ``rangeStart``, ``rangeEnd``,
``gateway``) or ``ranges`` (a list of range sets, each a list of ranges; one
address is allocated per set, so ``[[v4...], [v6...]]`` gives dual-stack).
Also ``routes``, ``dataDir``, ``dns``; the ``ipRanges`` capability overrides
``ranges``; a specific address may be requested via ``CNI_ARGS=IP=...`` or the
``ips`` capability.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni.spec import (
    ERR_CHECK_FAILED,
    ERR_EXISTS,
    ERR_INVALID_CONFIG,
    ERR_IPAM_EXHAUSTED,
    ERR_NOT_AVAILABLE,
    CNIArgs,
    CNIError,
    normalize_result,
)

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Range:
    """One allocatable range inside a subnet."""

    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress | None

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) and ip.version == self.start.version \
            and self.start <= ip <= self.end

    def overlaps(self, other: Range) -> bool:
        return self.start.version == other.start.version and self.start <= other.end and other.start <= self.end


def _bad(details: str) -> CNIError:
    return CNIError(ERR_INVALID_CONFIG, "invalid host-local IPAM configuration", details)


def _parse_ip(value: Any, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise _bad(f"{what} {value!r} is not an IP address") from None


def parse_range(r: Mapping[str, Any]) -> Range:
    """Validate one range; defaults follow the reference plugin (.1 gateway, skip network/broadcast)."""
    if not isinstance(r, Mapping) or not r.get("subnet"):
        raise _bad("missing subnet: every range needs a 'subnet'")
    try:
        subnet = ipaddress.ip_network(r["subnet"], strict=False)
    except (ValueError, TypeError):
        raise _bad(f"subnet {r['subnet']!r} is not a CIDR") from None
    if subnet.num_addresses < 4 and subnet.version == 4:
        raise _bad(f"network {subnet} too small to allocate from")
    first = subnet.network_address + 1
    last = subnet.broadcast_address - (1 if subnet.version == 4 else 0)
    start = _parse_ip(r["rangeStart"], "rangeStart") if r.get("rangeStart") else first
    end = _parse_ip(r["rangeEnd"], "rangeEnd") if r.get("rangeEnd") else last
    for ip, what in ((start, "rangeStart"), (end, "rangeEnd")):
        if ip.version != subnet.version or ip not in subnet:
            raise _bad(f"{what} {ip} is not inside subnet {subnet}")
    if start > end:
        raise _bad(f"rangeStart {start} is after rangeEnd {end}")
    gateway: IPAddress | None = _parse_ip(r["gateway"], "gateway") if r.get("gateway") else first
    if gateway is not None and (gateway.version != subnet.version or gateway not in subnet):
        raise _bad(f"gateway {gateway} is not inside subnet {subnet}")
    return Range(subnet, start, end, gateway)


def parse_range_sets(conf: Mapping[str, Any]) -> list[list[Range]]:
    """All range sets of a request config, validated, with no overlap anywhere."""
    ipam = conf.get("ipam")
    if not isinstance(ipam, Mapping):
        raise _bad("missing 'ipam' section")
    raw_sets = (conf.get("runtimeConfig") or {}).get("ipRanges") or ipam.get("ranges")
    if not raw_sets:
        if not ipam.get("subnet"):
            raise _bad("missing subnet: set 'ipam.subnet' or 'ipam.ranges'")
        raw_sets = [[{k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}]]
    if not isinstance(raw_sets, list) or not all(isinstance(s, list) and s for s in raw_sets):
        raise _bad("'ranges' must be a non-empty list of non-empty lists of ranges")
    sets = [[parse_range(r) for r in s] for s in raw_sets]
    flat = [r for s in sets for r in s]
    for i, a in enumerate(flat):
        for b in flat[i + 1:]:
            if a.overlaps(b):
                raise _bad(f"ranges overlap: {a.subnet} [{a.start}-{a.end}] and {b.subnet} [{b.start}-{b.end}]")
    for s in sets:
        if len({r.subnet.version for r in s}) != 1:
            raise _bad("a range set mixes IPv4 and IPv6 ranges")
    return sets


class Store:
    """The lease directory of one network; every method expects the lock held."""

    def __init__(self, data_dir: str | os.PathLike[str], network: str) -> None:
        self.dir = Path(data_dir) / network

    @contextlib.contextmanager
    def locked(self) -> Iterator[Store]:
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)

    def leases(self) -> dict[IPAddress, tuple[str, str]]:
        """All leases: ip -> (container id, ifname)."""
        out: dict[IPAddress, tuple[str, str]] = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                continue
            owner = self.owner(ip)
            if owner is not None:
                out[ip] = owner
        return out

    def owner(self, ip: IPAddress) -> tuple[str, str] | None:
        try:
            text = (self.dir / str(ip)).read_text()
        except FileNotFoundError:
            return None
        cid, _, ifname = text.replace("\r\n", "\n").partition("\n")
        return cid.strip(), ifname.strip()

    def reserve(self, ip: IPAddress, cid: str, ifname: str) -> bool:
        try:
            fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(f"{cid}\r\n{ifname}")
        return True

    def release(self, ip: IPAddress) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / str(ip))

    # Owner index: ``.owners/<hash(cid, ifname)>`` lists that attachment's IPs, so the
    # duplicate check on ADD and the release on DEL do not read every lease file
    # (which made both O(pods)). Lease files stay the source of truth.
    def _index(self, cid: str, ifname: str) -> Path:
        import hashlib

        return self.dir / ".owners" / hashlib.sha256(f"{cid}\0{ifname}".encode()).hexdigest()[:32]

    def indexed(self, cid: str, ifname: str) -> list[IPAddress]:
        try:
            text = self._index(cid, ifname).read_text()
        except FileNotFoundError:
            return []
        ips = [ipaddress.ip_address(x) for x in text.split()]
        return [ip for ip in ips if self.owner(ip) == (cid, ifname)]

    def set_index(self, cid: str, ifname: str, ips: list[IPAddress]) -> None:
        path = self._index(cid, ifname)
        if ips:
            path.parent.mkdir(exist_ok=True)
            path.write_text("\n".join(map(str, ips)))
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def names(self) -> set[IPAddress]:
        """The leased addresses, from file names alone (no reads)."""
        out = set()
        for name in os.listdir(self.dir):
            with contextlib.suppress(ValueError):
                out.add(ipaddress.ip_address(name))
        return out

    def last_reserved(self, set_index: int) -> IPAddress | None:
        try:
            return ipaddress.ip_address((self.dir / f"last_reserved_ip.{set_index}").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def set_last_reserved(self, set_index: int, ip: IPAddress) -> None:
        (self.dir / f"last_reserved_ip.{set_index}").write_text(str(ip))


def _store(conf: Mapping[str, Any]) -> Store:
    return Store(conf["ipam"].get("dataDir") or DEFAULT_DATA_DIR, conf["name"])


def _candidates(ranges: list[Range], after: IPAddress | None) -> Iterator[IPAddress]:
    """Every address of the set once, starting just after ``after`` (round-robin)."""
    start_range, start_ip = 0, None
    if after is not None:
        for i, r in enumerate(ranges):
            if after in r:
                start_range, start_ip = i, after
                break
    n = len(ranges)
    for k in range(n + 1):
        r = ranges[(start_range + k) % n]
        lo, hi = int(r.start), int(r.end)
        if k == 0 and start_ip is not None:
            lo = int(start_ip) + 1
        if k == n:  # wrapped around: the part of the first range before the start point
            if start_ip is None:
                break
            hi = int(start_ip)
        for v in range(lo, hi + 1):
            ip = ipaddress.ip_address(v)
            if ip == r.gateway or (r.subnet.version == 4 and ip in (r.subnet.network_address, r.subnet.broadcast_address)):
                continue
            yield ip


def _capacity(r: Range) -> int:
    """How many addresses ``_candidates`` can yield from ``r`` (counted, not enumerated: v6 ranges are huge)."""
    n = int(r.end) - int(r.start) + 1
    skip = {r.gateway} if r.gateway is not None else set()
    if r.subnet.version == 4:
        skip |= {r.subnet.network_address, r.subnet.broadcast_address}
    return n - sum(1 for ip in skip if ip in r)


def _requested_ips(conf: Mapping[str, Any], args: CNIArgs) -> list[IPAddress]:
    wanted: list[Any] = list((conf.get("runtimeConfig") or {}).get("ips") or [])
    ip_arg = args.args_dict().get("IP")
    if ip_arg:
        wanted += ip_arg.split(",")
    return [_parse_ip(str(w).split("/")[0], "requested IP") for w in wanted]


def add(conf: Mapping[str, Any], args: CNIArgs) -> dict[str, Any]:
    """Allocate one address per range set for (container id, ifname); return the IPAM result."""
    sets = parse_range_sets(conf)
    requested = _requested_ips(conf, args)
    store = _store(conf)
    result_ips: list[dict[str, Any]] = []
    with store.locked():
        leases = store.names()
        mine = store.indexed(args.container_id, args.ifname)
        if mine:
            raise CNIError(ERR_EXISTS, "duplicate allocation is not allowed",
                           f"{', '.join(map(str, mine))} already allocated to {args.container_id}/{args.ifname}")
        taken: list[IPAddress] = []
        try:
            for idx, ranges in enumerate(sets):
                ip = None
                want = [w for w in requested if any(w in r for r in ranges)]
                if want:
                    if want[0] in leases or not store.reserve(want[0], args.container_id, args.ifname):
                        raise CNIError(ERR_EXISTS, "requested IP is already allocated", str(want[0]))
                    ip = want[0]
                else:
                    for cand in _candidates(ranges, store.last_reserved(idx)):
                        if cand not in leases and store.reserve(cand, args.container_id, args.ifname):
                            ip = cand
                            break
                if ip is None:
                    desc = ", ".join(f"{r.start}-{r.end}" for r in ranges)
                    raise CNIError(ERR_IPAM_EXHAUSTED, "no IP addresses available in range set", desc)
                taken.append(ip)
                store.set_last_reserved(idx, ip)
                rng = next(r for r in ranges if ip in r)
                entry: dict[str, Any] = {"address": f"{ip}/{rng.subnet.prefixlen}"}
                if rng.gateway is not None:
                    entry["gateway"] = str(rng.gateway)
                result_ips.append(entry)
        except BaseException:
            for ip in taken:  # all-or-nothing: a failed second set must not leak the first
                store.release(ip)
            raise
        store.set_index(args.container_id, args.ifname, taken)
    ipam = conf["ipam"]
    result: dict[str, Any] = {"cniVersion": conf["cniVersion"], "ips": result_ips,
                              "routes": [dict(r) for r in ipam.get("routes", [])]}
    if ipam.get("dns"):
        result["dns"] = dict(ipam["dns"])
    return result


def delete(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """Release every lease of (container id, ifname); missing leases are fine (DEL is idempotent)."""
    parse_range_sets(conf)
    store = _store(conf)
    if not store.dir.exists():
        return
    owner = (args.container_id, args.ifname)
    with store.locked():
        # Fast path: the owner index, or the addresses named in prevResult (what the invoker cached).
        prev = normalize_result(conf.get("prevResult")) or {}
        hinted = store.indexed(*owner) + [ipaddress.ip_interface(i["address"]).ip for i in prev.get("ips", [])]
        store.set_index(*owner, [])
        released = False
        for ip in hinted:
            if store.owner(ip) == owner:
                store.release(ip)
                released = True
        if not released:
            for ip, o in store.leases().items():
                if o == owner:
                    store.release(ip)


def check(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """CHECK: the reservation for (container id, ifname) must still be on disk."""
    parse_range_sets(conf)
    store = _store(conf)
    with store.locked():
        mine = {ip for ip, o in store.leases().items() if o == (args.container_id, args.ifname)}
    if not mine:
        raise CNIError(ERR_CHECK_FAILED, "no IP reservation found", f"{args.container_id}/{args.ifname} in {store.dir}")
    prev = normalize_result(conf.get("prevResult")) or {}
    for i in prev.get("ips", []):
        ip = ipaddress.ip_interface(i["address"]).ip
        if ip not in mine and any(ip in r for s in parse_range_sets(conf) for r in s):
            raise CNIError(ERR_CHECK_FAILED, "IP reservation missing", f"{ip} is not reserved for {args.container_id}/{args.ifname}")


def gc(conf: Mapping[str, Any], args: CNIArgs) -> list[str]:
    """Release leases whose attachment is not in ``cni.dev/valid-attachments``; return the IPs released."""
    parse_range_sets(conf)
    valid = {(a.get("containerID", ""), a.get("ifname", "")) for a in conf.get("cni.dev/valid-attachments", [])}
    live = set(conf.get("kubeletpy.io/live-container-ids", []))  # see cni.invoker.LIVE_IDS_KEY
    store = _store(conf)
    if not store.dir.exists():
        return []
    released = []
    with store.locked():
        for ip, owner in store.leases().items():
            if owner not in valid and owner[0] not in live:
                store.release(ip)
                store.set_index(*owner, [])
                released.append(str(ip))
    return released


def status(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """STATUS: not ready if any range set has no free address left."""
    sets = parse_range_sets(conf)
    store = _store(conf)
    with store.locked():
        leases = store.leases()
    for ranges in sets:
        if sum(_capacity(r) for r in ranges) <= sum(1 for ip in leases if any(ip in r for r in ranges)):
            raise CNIError(ERR_NOT_AVAILABLE, "no IP addresses available", ", ".join(f"{r.start}-{r.end}" for r in ranges))
