"""Our plugins and the one entry point that runs any of them in-process.

:func:`run` is what both the executable wrapper (:mod:`cni.skel`) and the
invoker call, so an in-process call validates and answers exactly like an
exec'ed plugin: same checks, same error codes, result rendered in the
request's ``cniVersion``. Plugin modules expose ``add/delete/check`` (and
optionally ``gc/status``) taking ``(conf, args)`` with a normalized prevResult.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from cni.spec import (
    ERR_PLUGIN,
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    CNIArgs,
    CNIError,
    format_result,
    normalize_result,
    validate_conf,
)

#: plugin type -> module. The ``kubeletpy-*`` aliases let a config pick ours explicitly.
PLUGIN_MODULES: dict[str, str] = {
    "bridge": "cni.plugins.bridge",
    "host-local": "cni.plugins.hostlocal",
    "loopback": "cni.plugins.loopback",
    "portmap": "cni.plugins.portmap",
}
PLUGIN_MODULES.update({f"kubeletpy-{k}": v for k, v in list(PLUGIN_MODULES.items())})

_FUNCS = {"ADD": "add", "DEL": "delete", "CHECK": "check", "GC": "gc", "STATUS": "status"}


def get_plugin(plugin_type: str) -> ModuleType | None:
    """The module implementing ``plugin_type``, or None if it is not one of ours."""
    name = PLUGIN_MODULES.get(plugin_type)
    return importlib.import_module(name) if name else None


def version_result(conf: Mapping[str, Any] | None) -> dict[str, Any]:
    version = (conf or {}).get("cniVersion") or LATEST_VERSION
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def call(module: ModuleType, conf: Mapping[str, Any], args: CNIArgs) -> Any:
    """Call the module function for ``args.command`` with spec validation; raw (internal-shape) return."""
    args.validate()
    if args.command == "VERSION":
        return version_result(conf)
    validate_conf(conf, args.command)
    req = dict(conf)
    if req.get("prevResult"):
        req["prevResult"] = normalize_result(req["prevResult"])
    fn = getattr(module, _FUNCS[args.command], None)
    if fn is None:  # GC/STATUS on a plugin with nothing to collect/report: success
        return None
    try:
        return fn(req, args)
    except CNIError:
        raise
    except Exception as e:  # netlink/OS failures become spec errors instead of tracebacks
        raise CNIError(ERR_PLUGIN, f"{conf.get('type')} {args.command} failed", f"{type(e).__name__}: {e}") from e


def run(plugin_type: str, conf: Mapping[str, Any], args: CNIArgs) -> dict[str, Any] | None:
    """Run one of our plugins in-process; returns the result JSON object (ADD, VERSION) or None.

    Example, as the runtime does it::

        res = run("bridge", {"cniVersion": "1.0.0", "name": "pods", "type": "bridge",
                             "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}},
                  CNIArgs("ADD", container_id=cid, netns="/run/netns/x", ifname="eth0"))
    """
    module = get_plugin(plugin_type)
    if module is None:
        raise CNIError(ERR_PLUGIN, "not a kubeletpy plugin", f"type={plugin_type!r}")
    out = call(module, conf, args)
    if args.command == "VERSION":
        return out
    if args.command == "ADD":
        return format_result(out, conf["cniVersion"])
    return None


def delegate_ipam(command: str, conf: Mapping[str, Any], args: CNIArgs) -> dict[str, Any] | None:
    """Delegate ``command`` to the configured IPAM plugin (spec section 4).

    Our host-local runs in-process; any other IPAM type is exec'ed from CNI_PATH
    with the complete network configuration, as the delegation protocol says.
    Returns the normalized IPAM result for ADD, else None.
    """
    import dataclasses

    from cni.execplugin import exec_plugin
    from cni.spec import ERR_INVALID_CONFIG

    ipam = conf.get("ipam")
    ipam_type = ipam.get("type") if isinstance(ipam, Mapping) else None
    if not ipam_type or not isinstance(ipam_type, str):
        raise CNIError(ERR_INVALID_CONFIG, "missing IPAM type", "set 'ipam.type', e.g. \"host-local\"")
    dargs = dataclasses.replace(args, command=command)
    module = get_plugin(ipam_type)
    if module is not None:
        fn = getattr(module, _FUNCS[command], None)
        out = fn(conf, dargs) if fn is not None else None
    else:
        req = dict(conf)
        if req.get("prevResult"):
            req["prevResult"] = format_result(req["prevResult"], conf["cniVersion"])
        out = exec_plugin(ipam_type, req, dargs)
    return normalize_result(out) if command == "ADD" else None
