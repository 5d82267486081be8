"""NAT rules for ``ipMasq`` (bridge) and host ports (portmap).

Two backends with the same small API, keyed by a per-attachment ``key`` so that
DEL can remove exactly what ADD installed without needing prevResult:

* **nftables** (preferred): table ``inet kubeletpy_cni``, one *base* chain per
  attachment and hook. A base chain per attachment makes ADD and DEL single,
  atomic and idempotent transactions (``add chain`` + ``flush`` + rules;
  ``add chain`` + ``flush`` + ``delete chain``) with no handle lookups, and no
  shared chain whose jump rules could race. Driven in-process through
  libnftables (ctypes) — about a millisecond, no fork — or the ``nft`` binary.
* **iptables** (fallback when nftables is unusable): chains ``KP-MASQ-<key>``,
  ``KP-HP-<key>``, ``KP-HPM-<key>`` in the nat table, jumped to from the
  built-in chains with a comment naming the key.

The table/chains stay out of the way of other managers (Docker, kube-proxy):
nothing here flushes a chain it did not create.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import ipaddress
import re
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Protocol

from cni.spec import ERR_INVALID_CONFIG, ERR_PLUGIN, CNIError

TABLE = "kubeletpy_cni"
COMMENT_PREFIX = "kubeletpy-cni"
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    """12 hex chars naming one attachment's rules; deterministic so DEL needs no state."""
    return hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PortMap:
    """One host port forwarded to one pod address."""

    protocol: str                 # tcp | udp | sctp
    host_port: int
    pod_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    container_port: int
    host_ip: str | None = None    # only traffic to this host address is forwarded


class Backend(Protocol):
    name: str

    def ensure_masq(self, key: str, pod_ips: list[IPInterface], network: str = "") -> None: ...
    def remove_masq(self, key: str) -> None: ...
    def has_masq(self, key: str) -> bool: ...
    def ensure_portmap(self, key: str, maps: list[PortMap], snat: bool, network: str = "") -> None: ...
    def remove_portmap(self, key: str) -> None: ...
    def has_portmap(self, key: str) -> bool: ...
    def gc(self, kind: str, network: str, valid_keys: set[str]) -> list[str]: ...


def _comment_text(network: str, key: str) -> str:
    """Rule comment naming the network and attachment key, so GC can tell whose rules they are."""
    return f"{COMMENT_PREFIX} {network[:64] or '-'} {key}"


_COMMENT_RE = re.compile(COMMENT_PREFIX + r" (\S+) ([0-9a-f]{12})")


def _fam(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return "ip" if ip.version == 4 else "ip6"


def _mcast(version: int) -> str:
    return "224.0.0.0/4" if version == 4 else "ff00::/8"


# ----------------------------------------------------------------------------- nftables


class _LibNft:
    """Minimal ctypes binding of libnftables: run a script, get output or error text."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        lib = ctypes.CDLL(name)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)
        self.lock = threading.Lock()  # one context, not safe to share concurrently

    def run(self, script: str) -> tuple[int, str, str]:
        with self.lock:
            rc = self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode())
            out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode()
        return rc, out, err


class NftBackend:
    name = "nftables"

    def __init__(self) -> None:
        self._lib: _LibNft | None = None
        try:
            self._lib = _LibNft()
        except OSError:
            if not shutil.which("nft"):
                raise
        rc, _, err = self._run_raw("list tables")
        if rc != 0:
            raise OSError(f"nftables unusable: {err.strip()}")

    def _run_raw(self, script: str) -> tuple[int, str, str]:
        if self._lib is not None:
            return self._lib.run(script)
        p = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr

    def run(self, script: str) -> str:
        rc, out, err = self._run_raw(script)
        if rc != 0:
            raise CNIError(ERR_PLUGIN, "nftables update failed", f"{err.strip()}\nscript:\n{script}")
        return out

    def _chains(self, key: str, kind: str) -> list[tuple[str, str]]:
        if kind == "masq":
            return [(f"masq_{key}", "type nat hook postrouting priority 100;")]
        return [(f"pm_{key}_pre", "type nat hook prerouting priority -100;"),
                (f"pm_{key}_out", "type nat hook output priority -100;"),
                (f"pm_{key}_post", "type nat hook postrouting priority 100;")]

    def _replace(self, key: str, kind: str, rules: dict[str, list[str]], network: str) -> None:
        lines = [f"add table inet {TABLE}"]
        comment = _comment_text(network, key)
        for chain, spec in self._chains(key, kind):
            lines += [f"add chain inet {TABLE} {chain} {{ {spec} }}", f"flush chain inet {TABLE} {chain}"]
            lines += [f"add rule inet {TABLE} {chain} {r} comment \"{comment}\"" for r in rules.get(chain, [])]
        self.run("\n".join(lines) + "\n")

    def _remove(self, key: str, kind: str) -> None:
        lines = [f"add table inet {TABLE}"]
        for chain, _ in self._chains(key, kind):
            # add-then-delete: one transaction that succeeds whether or not the chain exists
            lines += [f"add chain inet {TABLE} {chain}", f"flush chain inet {TABLE} {chain}",
                      f"delete chain inet {TABLE} {chain}"]
        self.run("\n".join(lines) + "\n")

    def _has(self, key: str, kind: str) -> bool:
        chain = self._chains(key, kind)[0][0]
        rc, out, _ = self._run_raw(f"list chain inet {TABLE} {chain}")
        return rc == 0 and f" {key}\"" in out

    def gc(self, kind: str, network: str, valid_keys: set[str]) -> list[str]:
        """Remove ``kind`` rules of ``network`` whose key is not in ``valid_keys``; return the keys removed."""
        rc, out, _ = self._run_raw(f"list table inet {TABLE}")
        if rc != 0:
            return []
        prefix = "masq_" if kind == "masq" else "pm_"
        stale, chain = set(), ""
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["chain"]:
                chain = words[1]
            m = _COMMENT_RE.search(line)
            if m and chain.startswith(prefix) and m.group(1) == (network[:64] or "-") and m.group(2) not in valid_keys:
                stale.add(m.group(2))
        for key in stale:
            self._remove(key, kind)
        return sorted(stale)

    def ensure_masq(self, key: str, pod_ips: list[IPInterface], network: str = "") -> None:
        rules = []
        for ipi in pod_ips:
            f = _fam(ipi.ip)
            rules.append(f"{f} saddr {ipi.ip} {f} daddr != {ipi.network} {f} daddr != {_mcast(ipi.version)} masquerade")
        self._replace(key, "masq", {f"masq_{key}": rules}, network)

    def remove_masq(self, key: str) -> None:
        self._remove(key, "masq")

    def has_masq(self, key: str) -> bool:
        return self._has(key, "masq")

    def ensure_portmap(self, key: str, maps: list[PortMap], snat: bool, network: str = "") -> None:
        pre, out, post = [], [], []
        for m in maps:
            f = _fam(m.pod_ip)
            dst = f"{f} daddr {m.host_ip}" if m.host_ip else "fib daddr type local"
            to = f"{m.pod_ip}:{m.container_port}" if m.pod_ip.version == 4 else f"[{m.pod_ip}]:{m.container_port}"
            rule = f"{dst} {m.protocol} dport {m.host_port} dnat {f} to {to}"
            pre.append(rule)
            out.append(rule)
            if snat:
                # pod reaching itself through its host port: the reply must come back via the host
                post.append(f"{f} saddr {m.pod_ip} {f} daddr {m.pod_ip} {m.protocol} dport {m.container_port} masquerade")
                if m.pod_ip.version == 4:
                    # host reaching localhost:hostPort: 127.0.0.1 cannot be a source on the bridge
                    post.append(f"ip saddr 127.0.0.0/8 ip daddr {m.pod_ip} {m.protocol} dport {m.container_port} masquerade")
        self._replace(key, "portmap", {f"pm_{key}_pre": pre, f"pm_{key}_out": out, f"pm_{key}_post": post}, network)

    def remove_portmap(self, key: str) -> None:
        self._remove(key, "portmap")

    def has_portmap(self, key: str) -> bool:
        return self._has(key, "portmap")


# ----------------------------------------------------------------------------- iptables


class IptablesBackend:
    name = "iptables"

    def __init__(self) -> None:
        if not shutil.which("iptables"):
            raise OSError("iptables not found")

    @staticmethod
    def _ipt(version: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        tool = "iptables" if version == 4 else "ip6tables"
        p = subprocess.run([tool, "-w", "-t", "nat", *args], capture_output=True, text=True)
        if check and p.returncode != 0:
            raise CNIError(ERR_PLUGIN, f"{tool} failed", f"{' '.join(args)}: {p.stderr.strip()}")
        return p

    def _comment(self, key: str, network: str = "") -> list[str]:
        return ["-m", "comment", "--comment", _comment_text(network, key)]

    def gc(self, kind: str, network: str, valid_keys: set[str]) -> list[str]:
        """Remove ``kind`` chains of ``network`` whose key is not in ``valid_keys``; return the keys removed."""
        prefix = "-A KP-MASQ-" if kind == "masq" else "-A KP-HP-"
        stale = set()
        for v in self._versions():
            for line in self._ipt(v, "-S", check=False).stdout.splitlines():
                m = _COMMENT_RE.search(line)
                if line.startswith(prefix) and m and m.group(1) == (network[:64] or "-") and m.group(2) not in valid_keys:
                    stale.add(m.group(2))
        for key in stale:
            if kind == "masq":
                self.remove_masq(key)
            else:
                self.remove_portmap(key)
        return sorted(stale)

    def _drop_chain(self, version: int, chain: str, parents: tuple[str, ...]) -> None:
        for parent in parents:
            p = self._ipt(version, "-S", parent, check=False)
            for line in p.stdout.splitlines():
                if line.endswith(f"-j {chain}"):
                    argv = shlex.split(line)
                    argv[0] = "-D"
                    self._ipt(version, *argv, check=False)
        self._ipt(version, "-F", chain, check=False)
        self._ipt(version, "-X", chain, check=False)

    def _versions(self) -> tuple[int, ...]:
        return (4, 6) if shutil.which("ip6tables") else (4,)

    def ensure_masq(self, key: str, pod_ips: list[IPInterface], network: str = "") -> None:
        self.remove_masq(key)
        chain = f"KP-MASQ-{key}"
        for v in {i.version for i in pod_ips}:
            self._ipt(v, "-N", chain)
            for ipi in (i for i in pod_ips if i.version == v):
                self._ipt(v, "-A", chain, "-d", str(ipi.network), "-j", "ACCEPT", *self._comment(key, network))
            self._ipt(v, "-A", chain, "!", "-d", _mcast(v), "-j", "MASQUERADE", *self._comment(key, network))
            for ipi in (i for i in pod_ips if i.version == v):
                self._ipt(v, "-A", "POSTROUTING", "-s", str(ipi.ip), *self._comment(key, network), "-j", chain)

    def remove_masq(self, key: str) -> None:
        for v in self._versions():
            self._drop_chain(v, f"KP-MASQ-{key}", ("POSTROUTING",))

    def has_masq(self, key: str) -> bool:
        return any(self._ipt(v, "-S", f"KP-MASQ-{key}", check=False).returncode == 0 for v in self._versions())

    def ensure_portmap(self, key: str, maps: list[PortMap], snat: bool, network: str = "") -> None:
        self.remove_portmap(key)
        dn, sn = f"KP-HP-{key}", f"KP-HPM-{key}"
        for v in {m.pod_ip.version for m in maps}:
            self._ipt(v, "-N", dn)
            self._ipt(v, "-N", sn)
            for m in (m for m in maps if m.pod_ip.version == v):
                dst = ["-d", m.host_ip] if m.host_ip else []
                to = f"{m.pod_ip}:{m.container_port}" if v == 4 else f"[{m.pod_ip}]:{m.container_port}"
                self._ipt(v, "-A", dn, *dst, "-p", m.protocol, "--dport", str(m.host_port), "-j", "DNAT",
                          "--to-destination", to, *self._comment(key, network))
                if snat:
                    self._ipt(v, "-A", sn, "-s", str(m.pod_ip), "-d", str(m.pod_ip), "-p", m.protocol,
                              "--dport", str(m.container_port), "-j", "MASQUERADE", *self._comment(key, network))
                    if v == 4:
                        self._ipt(v, "-A", sn, "-s", "127.0.0.0/8", "-d", str(m.pod_ip), "-p", m.protocol,
                                  "--dport", str(m.container_port), "-j", "MASQUERADE", *self._comment(key, network))
            local = ["-m", "addrtype", "--dst-type", "LOCAL"]
            self._ipt(v, "-A", "PREROUTING", *local, *self._comment(key, network), "-j", dn)
            self._ipt(v, "-A", "OUTPUT", *local, *self._comment(key, network), "-j", dn)
            self._ipt(v, "-A", "POSTROUTING", *self._comment(key, network), "-j", sn)

    def remove_portmap(self, key: str) -> None:
        for v in self._versions():
            self._drop_chain(v, f"KP-HP-{key}", ("PREROUTING", "OUTPUT"))
            self._drop_chain(v, f"KP-HPM-{key}", ("POSTROUTING",))

    def has_portmap(self, key: str) -> bool:
        return any(self._ipt(v, "-S", f"KP-HP-{key}", check=False).returncode == 0 for v in self._versions())


# ----------------------------------------------------------------------------- conntrack


def flush_udp_conntrack(ports: list[tuple[int, int]]) -> int:
    """Forget conntrack entries of UDP flows to these host ports ``(ip version, port)``.

    UDP "connections" never close: without this, a client that keeps sending
    to a host port stays NATed to the old pod (or nowhere) after the mapping
    changed, until its entry times out. Best effort; returns how many went.
    """
    if not ports:
        return 0
    import socket

    from pyroute2.conntrack import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    deleted = 0
    ct = Conntrack()
    try:
        for version, port in set(ports):
            fam = socket.AF_INET if version == 4 else socket.AF_INET6
            flt = NFCTAttrTuple(family=fam, proto=socket.IPPROTO_UDP, dport=port)
            for entry in list(ct.dump_entries(tuple_orig=flt)):
                try:
                    ct.delete(entry)
                    deleted += 1
                except Exception:  # raced with expiry
                    pass
    finally:
        ct.close()
    return deleted


# ----------------------------------------------------------------------------- selection

_backends: dict[str, Backend] = {}
_select_lock = threading.Lock()


def get_backend(preference: str | None = None) -> Backend:
    """The backend to use: ``preference`` ("nftables"/"iptables") or nftables, falling back to iptables."""
    if preference not in (None, "nftables", "iptables"):
        raise CNIError(ERR_INVALID_CONFIG, "invalid firewallBackend", f"{preference!r}: use \"nftables\" or \"iptables\"")
    order = [preference] if preference else ["nftables", "iptables"]
    errors = []
    with _select_lock:
        for name in order:
            if name in _backends:
                return _backends[name]
            try:
                backend: Backend = NftBackend() if name == "nftables" else IptablesBackend()
            except (OSError, CNIError) as e:
                errors.append(f"{name}: {e}")
                continue
            _backends[name] = backend
            return backend
    raise CNIError(ERR_PLUGIN, "no usable firewall backend", "; ".join(errors) or f"unknown backend {preference!r}")


def remove_all() -> None:
    """Remove every NAT rule kubeletpy's CNI plugins ever installed (for ``kubeletpy down``).

    Only for tearing the whole node down: live pods lose masquerade and host ports.
    """
    if shutil.which("nft"):
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        rules = subprocess.run([tool, "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout.splitlines()
        for line in rules:  # jumps first, then the chains themselves
            if line.startswith("-A ") and " -j KP-" in line:
                argv = shlex.split(line)
                argv[0] = "-D"
                subprocess.run([tool, "-w", "-t", "nat", *argv], capture_output=True)
        for line in rules:
            if line.startswith("-N KP-"):
                chain = line.split()[1]
                subprocess.run([tool, "-w", "-t", "nat", "-F", chain], capture_output=True)
                subprocess.run([tool, "-w", "-t", "nat", "-X", chain], capture_output=True)
