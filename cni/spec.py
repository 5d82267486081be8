"""CNI protocol facts shared by every plugin and the invoker.

Kept in one place so that the executable plugins (env + stdin + stdout) and the
in-process calls (dict in, dict out) speak exactly the same protocol: the same
validation, the same error codes, the same result shape per spec version.

Internally every result is held in the 1.x shape (no ``version`` key in
``ips``). :func:`format_result` converts to the version the caller asked for,
because 0.3.x/0.4.0 consumers require ``ips[].version``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Versions this implementation produces and accepts. 0.1.0/0.2.0 used a different
#: result type (``ip4``/``ip6``) that no current runtime sends; we refuse them cleanly.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"

# Well-known error codes (spec section 5, "Error").
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
ERR_NOT_AVAILABLE_LIMITED = 51
# Plugin-specific codes (100+ are free for plugins to define).
ERR_PLUGIN = 100            #: a netlink / firewall / file-system step failed
ERR_IPAM_EXHAUSTED = 101    #: no free address left in a range set
ERR_EXISTS = 102            #: interface or allocation already exists (second ADD)
ERR_CHECK_FAILED = 103      #: CHECK found the attachment missing or different
ERR_PLUGIN_NOT_FOUND = 104  #: invoker could not find the executable for a type

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CNIError(Exception):
    """A protocol error: carries the spec code, a short msg and longer details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str = LATEST_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CNIError:
        return cls(int(d.get("code", ERR_PLUGIN)), str(d.get("msg", "plugin failed")), str(d.get("details", "")))


@dataclass
class CNIArgs:
    """The per-invocation parameters (the ``CNI_*`` environment variables).

    In-process callers build one directly; :meth:`from_env` is the executable path.
    """

    command: str = "ADD"
    container_id: str = ""
    netns: str = ""
    ifname: str = "eth0"
    args: str = ""                 #: raw CNI_ARGS, ``K=V;K2=V2``
    path: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CNIArgs:
        env = os.environ if env is None else env
        return cls(
            command=env.get("CNI_COMMAND", ""),
            container_id=env.get("CNI_CONTAINERID", ""),
            netns=env.get("CNI_NETNS", ""),
            ifname=env.get("CNI_IFNAME", ""),
            args=env.get("CNI_ARGS", ""),
            path=[p for p in env.get("CNI_PATH", "").split(os.pathsep) if p],
        )

    def to_env(self) -> dict[str, str]:
        return {
            "CNI_COMMAND": self.command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": self.args,
            "CNI_PATH": os.pathsep.join(self.path),
        }

    def args_dict(self) -> dict[str, str]:
        """Parse CNI_ARGS; malformed pairs are an env error (code 4) as the spec asks."""
        out: dict[str, str] = {}
        for part in self.args.split(";"):
            if not part:
                continue
            if "=" not in part:
                raise CNIError(ERR_INVALID_ENV, "invalid CNI_ARGS", f"pair {part!r} is not KEY=VALUE")
            k, v = part.split("=", 1)
            out[k] = v
        return out

    def validate(self) -> None:
        """Check the env parameters the command needs (spec section 2, per operation)."""
        cmd = self.command
        if cmd not in COMMANDS:
            raise CNIError(ERR_INVALID_ENV, "invalid CNI_COMMAND", f"CNI_COMMAND={cmd!r}; expected one of {', '.join(COMMANDS)}")
        if cmd in ("ADD", "DEL", "CHECK"):
            required = ["CNI_CONTAINERID", "CNI_IFNAME"] + (["CNI_NETNS"] if cmd != "DEL" else [])
            values = {"CNI_CONTAINERID": self.container_id, "CNI_IFNAME": self.ifname, "CNI_NETNS": self.netns}
            missing = [k for k in required if not values[k]]
            if missing:
                raise CNIError(ERR_INVALID_ENV, "missing environment variables", ", ".join(missing))
            if not _CONTAINER_ID_RE.match(self.container_id):
                raise CNIError(ERR_INVALID_ENV, "invalid CNI_CONTAINERID", f"{self.container_id!r} must match {_CONTAINER_ID_RE.pattern}")
            validate_ifname(self.ifname)
            if self.netns and not os.path.isabs(self.netns):
                raise CNIError(ERR_INVALID_ENV, "invalid CNI_NETNS", f"{self.netns!r} is not an absolute path")
        self.args_dict()


def validate_ifname(name: str) -> None:
    """Linux interface name rules, as the spec spells them out for CNI_IFNAME."""
    if not name or len(name) > 15 or name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        raise CNIError(ERR_INVALID_ENV, "invalid CNI_IFNAME", f"{name!r} is not a valid interface name")


def version_tuple(v: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in v.split("."))
    except ValueError:
        raise CNIError(ERR_DECODE, "invalid cniVersion", repr(v)) from None
    if len(parts) != 3:
        raise CNIError(ERR_DECODE, "invalid cniVersion", repr(v))
    return parts  # type: ignore[return-value]


def validate_conf(conf: Mapping[str, Any], command: str) -> str:
    """Validate the common keys of a plugin request configuration; return its cniVersion."""
    if not isinstance(conf, Mapping):
        raise CNIError(ERR_DECODE, "network configuration is not a JSON object")
    version = conf.get("cniVersion", "")
    if not isinstance(version, str) or not version:
        raise CNIError(ERR_INVALID_CONFIG, "missing cniVersion", "the request configuration needs a cniVersion")
    if version not in SUPPORTED_VERSIONS:
        version_tuple(version)
        raise CNIError(ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
                       f"config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}")
    if command == "CHECK" and version_tuple(version) < (0, 4, 0):
        raise CNIError(ERR_INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later", f"config is {version!r}")
    if command in ("GC", "STATUS") and version_tuple(version) < (1, 1, 0):
        raise CNIError(ERR_INCOMPATIBLE_VERSION, f"{command} needs cniVersion 1.1.0 or later", f"config is {version!r}")
    name = conf.get("name", "")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise CNIError(ERR_INVALID_CONFIG, "invalid network name", f"name={name!r}")
    typ = conf.get("type", "")
    if not isinstance(typ, str) or not typ or "/" in typ:
        raise CNIError(ERR_INVALID_CONFIG, "invalid plugin type", f"type={typ!r}")
    return version


def ip_version(address: str) -> int:
    return ipaddress.ip_interface(address).version


def normalize_result(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Bring a result of any supported version into the internal 1.x shape."""
    if not result:
        return None
    out = {k: v for k, v in result.items()}
    out["ips"] = [{k: v for k, v in ip.items() if k != "version"} for ip in result.get("ips", [])]
    out.setdefault("interfaces", [])
    out.setdefault("routes", [])
    return out


def format_result(result: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Render an internal result for a caller speaking ``version``."""
    out: dict[str, Any] = {"cniVersion": version}
    v = version_tuple(version)
    interfaces = [dict(i) for i in result.get("interfaces", [])]
    if v < (1, 1, 0):
        for i in interfaces:
            for k in ("mtu", "socketPath", "pciID"):
                i.pop(k, None)
    if interfaces or "interfaces" in result:
        out["interfaces"] = interfaces
    ips = []
    for ip in result.get("ips", []):
        ip = dict(ip)
        if v < (1, 0, 0):
            ip["version"] = str(ip_version(ip["address"]))
        ips.append(ip)
    out["ips"] = ips
    routes = [dict(r) for r in result.get("routes", [])]
    if v < (1, 1, 0):
        routes = [{k: r[k] for k in ("dst", "gw") if k in r} for r in routes]
    if routes:
        out["routes"] = routes
    if result.get("dns"):
        out["dns"] = dict(result["dns"])
    return out
