"""``loopback``: bring ``lo`` up inside the pod (and down on DEL).

Kept as its own plugin, as in the reference set, so a runtime can list it in
any chain. ADD output mirrors the reference: lo with 127.0.0.1/8 and ::1/128.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cni.netns import if_set_up, inet_socket, iproute, open_netns
from cni.spec import ERR_CHECK_FAILED, CNIArgs, CNIError


def _set_lo(netns: str, up: bool) -> None:
    fd = open_netns(netns)
    try:
        with inet_socket(fd) as s:
            if_set_up(s, "lo", up)
    finally:
        os.close(fd)


def add(conf: Mapping[str, Any], args: CNIArgs) -> dict[str, Any]:
    """Bring lo up; a fresh netns has it down, so even 127.0.0.1 would not work in the pod."""
    _set_lo(args.netns, True)
    prev = conf.get("prevResult")
    if prev:  # chained after another plugin: pass its result through unchanged
        return dict(prev)
    return {
        "cniVersion": conf["cniVersion"],
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": args.netns}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}, {"address": "::1/128", "interface": 0}],
        "routes": [],
    }


def delete(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """Undo ADD (lo down) if the netns still exists; success otherwise, as DEL must be idempotent."""
    if not args.netns:
        return
    try:
        _set_lo(args.netns, False)
    except CNIError:
        pass  # namespace gone: nothing to undo


def check(conf: Mapping[str, Any], args: CNIArgs) -> None:
    """lo must still be up."""
    link = _lo_link(args.netns)
    if not link["flags"] & 1:
        raise CNIError(ERR_CHECK_FAILED, "loopback CHECK failed", f"lo is down in {args.netns}")


def _lo_link(netns: str) -> Any:
    fd = open_netns(netns)
    try:
        ns = iproute(fd)
        try:
            return ns.link("get", index=ns.link_lookup(ifname="lo")[0])[0]
        finally:
            ns.close()
    finally:
        os.close(fd)
