"""Running a plugin the way the spec describes: find the executable, env + stdin in, JSON out.

Used by the invoker for foreign plugins and by our plugins to delegate IPAM to
a plugin that is not ours (e.g. ``dhcp`` or ``static``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from cni.spec import ERR_DECODE, ERR_PLUGIN, ERR_PLUGIN_NOT_FOUND, CNIArgs, CNIError

DEFAULT_TIMEOUT = 60.0


def find_plugin(plugin_type: str, dirs: Iterable[str]) -> str:
    dirs = list(dirs)
    if "/" in plugin_type or not plugin_type:
        raise CNIError(ERR_PLUGIN_NOT_FOUND, "invalid plugin type", repr(plugin_type))
    for d in dirs:
        p = os.path.join(d, plugin_type)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise CNIError(ERR_PLUGIN_NOT_FOUND, f"failed to find plugin {plugin_type!r}", f"searched {dirs}")


def exec_plugin(plugin_type: str, conf: Mapping[str, Any], args: CNIArgs,
                dirs: Iterable[str] | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any] | None:
    """Execute ``plugin_type`` from ``dirs`` (default ``args.path``); return its parsed stdout or None."""
    path = find_plugin(plugin_type, args.path if dirs is None else dirs)
    env = dict(os.environ)
    env.update(args.to_env())
    try:
        p = subprocess.run([path], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CNIError(ERR_PLUGIN, f"plugin {plugin_type} timed out", f"{args.command} after {timeout}s") from None
    out = p.stdout.strip()
    parsed: Any = None
    if out:
        try:
            parsed = json.loads(out)
        except json.JSONDecodeError:
            if p.returncode == 0:
                raise CNIError(ERR_DECODE, f"plugin {plugin_type} printed invalid JSON", out[:500].decode(errors="replace")) from None
    if p.returncode != 0:
        if isinstance(parsed, dict) and "code" in parsed:
            raise CNIError.from_dict(parsed)
        raise CNIError(ERR_PLUGIN, f"plugin {plugin_type} failed (exit {p.returncode})",
                       (p.stderr or p.stdout).decode(errors="replace").strip()[:2000])
    return parsed if isinstance(parsed, dict) else None
