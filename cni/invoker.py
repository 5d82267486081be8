"""The runtime side of CNI (what libcni does for containerd/CRI-O), for kubeletpy.

* loads a network configuration from a conf dir — the first file by name among
  ``*.conflist``, ``*.conf``, ``*.json``, as the kubelet/containerd do — or from a
  dict; a single-plugin ``.conf`` (0.x style) is wrapped into a list;
* picks the highest spec version offered by ``cniVersion``/``cniVersions`` that we speak;
* runs the chain: ADD in order passing ``prevResult``, DEL in reverse with the
  cached ADD result, CHECK in order, GC/STATUS on every plugin;
* caches the final ADD result per attachment under ``cache_dir`` so DEL/CHECK get
  their ``prevResult`` after a runtime restart;
* runs our own plugin types in-process (no fork/exec, no interpreter start) and
  any other type as an executable from ``bin_dirs``.

In-process use, as the runtime does it::

    inv = Invoker(cache_dir="/var/lib/cni/results")
    net = load_conf_dir("/etc/cni/net.d")
    result = inv.add(net, container_id, "/run/kubeletpy/netns/<pod>", "eth0",
                     capability_args={"portMappings": [...]})
    ...
    inv.delete(net, container_id, "/run/kubeletpy/netns/<pod>", "eth0")
    inv.repair(net, live_container_ids)   # at startup: drop what dead pods left behind
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.execplugin import DEFAULT_TIMEOUT, exec_plugin
from cni.plugins import PLUGIN_MODULES
from cni.plugins import run as run_in_process
from cni.spec import (
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_CONFIG,
    SUPPORTED_VERSIONS,
    CNIArgs,
    CNIError,
    format_result,
    normalize_result,
    version_tuple,
)

DEFAULT_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_CACHE_DIR = "/var/lib/cni/results"
CONF_EXTENSIONS = (".conflist", ".conf", ".json")
#: kubeletpy extension to GC: container ids whose attachments must all be kept,
#: for leases a live pod holds but the result cache lost (unknown to other plugins, which ignore it)
LIVE_IDS_KEY = "kubeletpy.io/live-container-ids"


@dataclass
class NetworkConfig:
    """A parsed network configuration list."""

    name: str
    cni_version: str                    #: the version selected for this run
    plugins: list[dict[str, Any]]
    disable_check: bool = False
    disable_gc: bool = False
    raw: dict[str, Any] = field(default_factory=dict)
    source: str | None = None


def parse_network_config(data: str | bytes | Mapping[str, Any], source: str | None = None) -> NetworkConfig:
    """Parse a ``.conflist`` (or single-plugin ``.conf``); bad input is a spec error, code 6 or 7."""
    if isinstance(data, str | bytes):
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CNIError(ERR_DECODE, "failed to decode network configuration", f"{source or '<data>'}: {e}") from None
    else:
        obj = dict(data)
    if not isinstance(obj, dict):
        raise CNIError(ERR_DECODE, "network configuration is not a JSON object", source or "")
    where = f" in {source}" if source else ""
    if "plugins" in obj:
        plugins = obj["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise CNIError(ERR_INVALID_CONFIG, "invalid network configuration", f"'plugins' must be a non-empty list{where}")
    elif "type" in obj:  # a single plugin .conf
        plugins = [{k: v for k, v in obj.items() if k not in ("cniVersion", "cniVersions", "name")}]
    else:
        raise CNIError(ERR_INVALID_CONFIG, "invalid network configuration", f"neither 'plugins' nor 'type'{where}")
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"] or "/" in p["type"]:
            raise CNIError(ERR_INVALID_CONFIG, "invalid plugin configuration", f"every plugin needs a 'type'{where}: {p!r}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise CNIError(ERR_INVALID_CONFIG, "invalid network configuration", f"missing 'name'{where}")
    offered = [v for v in [obj.get("cniVersion"), *(obj.get("cniVersions") or [])] if isinstance(v, str) and v]
    if not offered:
        raise CNIError(ERR_INVALID_CONFIG, "invalid network configuration", f"missing 'cniVersion'{where}")
    usable = [v for v in offered if v in SUPPORTED_VERSIONS]
    if not usable:
        raise CNIError(ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
                       f"config offers {offered}, we support {list(SUPPORTED_VERSIONS)}{where}")
    return NetworkConfig(
        name=name, cni_version=max(usable, key=version_tuple), plugins=plugins,
        disable_check=bool(obj.get("disableCheck")), disable_gc=bool(obj.get("disableGC")), raw=obj, source=source,
    )


def load_conf_dir(conf_dir: str | os.PathLike[str], name: str | None = None) -> NetworkConfig:
    """The network config the kubelet would use: first file by name (or the one named ``name``)."""
    files = sorted(p for p in Path(conf_dir).glob("*") if p.suffix in CONF_EXTENSIONS and p.is_file())
    errors = []
    for p in files:
        try:
            net = parse_network_config(p.read_bytes(), str(p))
        except CNIError as e:
            errors.append(f"{p.name}: {e}")
            continue
        if name is None or net.name == name:
            return net
    what = f"network {name!r}" if name else "a network configuration"
    raise CNIError(ERR_INVALID_CONFIG, f"no valid {what} in {conf_dir}", "; ".join(errors))


def _write_no_fsync(path: Path, obj: Any) -> None:
    """Atomic (temp + rename) but not durable: the cache only matters while the pod's
    netns exists, which a power loss ends anyway — and an fsync per ADD costs more
    than the whole netlink setup. (cri.fsutil.atomic_write_json is the durable one.)"""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def format_cni_args(args: Mapping[str, str] | str | None) -> str:
    if not args:
        return ""
    if isinstance(args, str):
        return args
    return ";".join(f"{k}={v}" for k, v in args.items())


class Invoker:
    """Runs network configuration lists for attachments; see the module docstring.

    ``bin_dirs``: where exec'ed plugins are looked up (and CNI_PATH for delegation).
    ``cache_dir``: the per-attachment result cache. ``in_process``: True runs every
    type we implement (``bridge``, ``host-local``, ``loopback``, ``portmap`` and the
    ``kubeletpy-*`` aliases) in this process; a collection limits that to those
    types; False execs everything (e.g. to drive the reference plugins).
    """

    def __init__(self, bin_dirs: Iterable[str] = DEFAULT_BIN_DIRS, cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
                 in_process: bool | Collection[str] = True, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.bin_dirs = [str(d) for d in bin_dirs]
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        if in_process is True:
            self.in_process: set[str] = set(PLUGIN_MODULES)
        elif in_process is False:
            self.in_process = set()
        else:
            self.in_process = set(in_process) & set(PLUGIN_MODULES)

    # ------------------------------------------------------------------ one plugin

    def _request(self, net: NetworkConfig, plugin: Mapping[str, Any], prev: Mapping[str, Any] | None,
                 capability_args: Mapping[str, Any] | None, version: str | None = None) -> dict[str, Any]:
        """Derive the request configuration (spec section 3): version, name, runtimeConfig, prevResult."""
        version = version or net.cni_version
        req = {k: v for k, v in plugin.items() if k != "capabilities"}
        req["cniVersion"] = version
        req["name"] = net.name
        caps = plugin.get("capabilities") or {}
        rc = {k: v for k, v in (capability_args or {}).items() if caps.get(k)}
        if rc:
            req["runtimeConfig"] = rc
        else:
            req.pop("runtimeConfig", None)
        if prev:
            req["prevResult"] = format_result(prev, version)
        return req

    def _run(self, req: dict[str, Any], args: CNIArgs) -> dict[str, Any] | None:
        ptype = req["type"]
        if ptype in self.in_process:
            out = run_in_process(ptype, req, args)
        else:
            out = exec_plugin(ptype, req, args, dirs=self.bin_dirs, timeout=self.timeout)
        return normalize_result(out) if args.command == "ADD" else out

    def _args(self, command: str, container_id: str, netns: str, ifname: str, cni_args: Mapping[str, str] | str | None) -> CNIArgs:
        return CNIArgs(command=command, container_id=container_id, netns=netns, ifname=ifname,
                       args=format_cni_args(cni_args), path=list(self.bin_dirs))

    # ------------------------------------------------------------------ cache

    def _cache_path(self, net_name: str, container_id: str, ifname: str) -> Path:
        return self.cache_dir / f"{net_name}-{container_id}-{ifname}"

    def cached(self, net_name: str, container_id: str, ifname: str) -> dict[str, Any] | None:
        """The cache entry of an attachment (its ``result`` is the final ADD result)."""
        try:
            return json.loads(self._cache_path(net_name, container_id, ifname).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def cached_attachments(self, net_name: str) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.cache_dir.glob(f"{net_name}-*")):
            with contextlib.suppress(OSError, json.JSONDecodeError):
                entry = json.loads(p.read_text())
                if entry.get("networkName") == net_name:
                    out.append(entry)
        return out

    def _write_cache(self, net: NetworkConfig, args: CNIArgs, result: Mapping[str, Any],
                     capability_args: Mapping[str, Any] | None) -> None:
        _write_no_fsync(self._cache_path(net.name, args.container_id, args.ifname), {
            "kind": "cniCacheV1", "containerId": args.container_id, "ifName": args.ifname,
            "networkName": net.name, "netns": args.netns, "cniArgs": args.args,
            "capabilityArgs": dict(capability_args or {}), "config": net.raw,
            "result": format_result(result, net.cni_version),
        })

    # ------------------------------------------------------------------ operations

    def add(self, net: NetworkConfig, container_id: str, netns: str, ifname: str = "eth0",
            cni_args: Mapping[str, str] | str | None = None, capability_args: Mapping[str, Any] | None = None,
            cleanup_on_failure: bool = True) -> dict[str, Any]:
        """ADD the chain; returns the final result (in the network's cniVersion) and caches it.

        If a plugin fails, the chain is DEL'ed (best effort) before the error is
        raised, so a failed ADD leaves neither interfaces, leases nor cache behind.
        """
        args = self._args("ADD", container_id, netns, ifname, cni_args)
        prev: dict[str, Any] | None = None
        try:
            for plugin in net.plugins:
                prev = self._run(self._request(net, plugin, prev, capability_args), args)
        except CNIError:
            if cleanup_on_failure:
                self._del_chain(net, container_id, netns, ifname, cni_args, capability_args, prev, best_effort=True)
            raise
        assert prev is not None
        self._write_cache(net, args, prev, capability_args)
        return format_result(prev, net.cni_version)

    def _del_chain(self, net: NetworkConfig, container_id: str, netns: str, ifname: str,
                   cni_args: Mapping[str, str] | str | None, capability_args: Mapping[str, Any] | None,
                   prev: Mapping[str, Any] | None, best_effort: bool = False) -> None:
        """DEL every plugin in reverse; stops at the first error unless ``best_effort`` (rollback)."""
        args = self._args("DEL", container_id, netns, ifname, cni_args)
        for plugin in reversed(net.plugins):
            try:
                self._run(self._request(net, plugin, prev, capability_args), args)
            except CNIError:
                if not best_effort:
                    raise

    def delete(self, net: NetworkConfig, container_id: str, netns: str = "", ifname: str = "eth0",
               cni_args: Mapping[str, str] | str | None = None,
               capability_args: Mapping[str, Any] | None = None) -> None:
        """DEL the chain in reverse with the cached ADD result; idempotent; drops the cache on success."""
        entry = self.cached(net.name, container_id, ifname)
        prev = normalize_result(entry.get("result")) if entry else None
        if entry and capability_args is None:
            capability_args = entry.get("capabilityArgs")
        if entry and cni_args is None:
            cni_args = entry.get("cniArgs")
        self._del_chain(net, container_id, netns, ifname, cni_args, capability_args, prev)
        with contextlib.suppress(FileNotFoundError):
            self._cache_path(net.name, container_id, ifname).unlink()

    def check(self, net: NetworkConfig, container_id: str, netns: str, ifname: str = "eth0",
              cni_args: Mapping[str, str] | str | None = None) -> None:
        """CHECK every plugin against the cached ADD result (no-op with ``disableCheck``)."""
        if net.disable_check:
            return
        if version_tuple(net.cni_version) < (0, 4, 0):
            raise CNIError(ERR_INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later", net.cni_version)
        entry = self.cached(net.name, container_id, ifname)
        if entry is None:
            raise CNIError(ERR_INVALID_CONFIG, "no cached result for this attachment",
                           f"{net.name}/{container_id}/{ifname}: CHECK needs a previous ADD")
        prev = normalize_result(entry["result"])
        args = self._args("CHECK", container_id, netns, ifname, cni_args if cni_args is not None else entry.get("cniArgs"))
        for plugin in net.plugins:
            self._run(self._request(net, plugin, prev, entry.get("capabilityArgs")), args)

    def gc(self, net: NetworkConfig, valid_attachments: Iterable[tuple[str, str]],
           live_container_ids: Iterable[str] = ()) -> list[CNIError]:
        """GC every plugin with the still-valid (container id, ifname) set; returns the errors.

        GC is a 1.1.0 verb: exec'ed plugins only get it when the network speaks
        1.1.0; our in-process plugins always do (they speak 1.1.0 whatever the file says).
        """
        if net.disable_gc:
            return []
        valid = [{"containerID": c, "ifname": i} for c, i in valid_attachments]
        errors: list[CNIError] = []
        for plugin in net.plugins:
            in_proc = plugin["type"] in self.in_process
            version = "1.1.0" if in_proc else net.cni_version
            if version_tuple(version) < (1, 1, 0):
                continue
            req = self._request(net, plugin, None, None, version=version)
            req["cni.dev/valid-attachments"] = valid
            if live_container_ids:  # our extension: keep every attachment of a live container
                req[LIVE_IDS_KEY] = sorted(set(live_container_ids))
            try:
                self._run(req, CNIArgs(command="GC", path=list(self.bin_dirs)))
            except CNIError as e:  # spec: continue with the other plugins, report all
                errors.append(e)
        return errors

    def status(self, net: NetworkConfig) -> None:
        """STATUS every plugin (1.1.0); raises the first error (code 50/51 = not ready)."""
        for plugin in net.plugins:
            in_proc = plugin["type"] in self.in_process
            version = "1.1.0" if in_proc else net.cni_version
            if version_tuple(version) < (1, 1, 0):
                continue
            self._run(self._request(net, plugin, None, None, version=version), CNIArgs(command="STATUS", path=list(self.bin_dirs)))

    def repair(self, net: NetworkConfig, live_container_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Startup repair: DEL every cached attachment of a container that no longer exists, then GC.

        DEL (with the cached config and result, no netns) releases leases, host
        veths and NAT rules; GC then catches leases that never made it into the
        cache (e.g. a crash between IPAM and the end of ADD). Returns what was DEL'ed.
        """
        live = set(live_container_ids)
        removed = []
        for entry in self.cached_attachments(net.name):
            cid, ifname = entry["containerId"], entry["ifName"]
            if cid in live:
                continue
            with contextlib.suppress(CNIError):
                self.delete(net, cid, "", ifname)
                removed.append((cid, ifname))
        still = [(e["containerId"], e["ifName"]) for e in self.cached_attachments(net.name)]
        self.gc(net, still, live)
        return removed
