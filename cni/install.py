"""Put our plugins where any CNI runtime looks for them (``/opt/cni/bin``).

Each wrapper is a two-line shell script that execs the console script of this
installation (or ``python -m cni.skel <type>`` if scripts are not on disk), so
the plugins work for containerd/CRI-O/cnitool too and keep following the
editable install. Written atomically; existing foreign files are replaced only
with ``overwrite=True`` (``make up`` owns /opt/cni/bin on a kubeletpy node).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from cri.fsutil import atomic_write_bytes

PLUGINS = {"bridge": "kubeletpy-bridge", "host-local": "kubeletpy-host-local",
           "loopback": "kubeletpy-loopback", "portmap": "kubeletpy-portmap"}
MARKER = "# kubeletpy CNI plugin wrapper"


def wrapper_text(plugin_type: str) -> str:
    script = Path(sys.executable).parent / PLUGINS[plugin_type]
    if script.exists():
        cmd = shlex.quote(str(script))
    else:
        cmd = f"{shlex.quote(sys.executable)} -m cni.skel {plugin_type}"
    return f"#!/bin/sh\n{MARKER}\nexec {cmd} \"$@\"\n"


def install_plugins(bin_dir: str | os.PathLike[str] = "/opt/cni/bin", names: str = "both",
                    overwrite: bool = True) -> list[Path]:
    """Write exec wrappers into ``bin_dir``; returns the paths written.

    ``names``: "plain" (``bridge``, ``host-local`` ... so stock configs use ours),
    "prefixed" (``kubeletpy-bridge`` ...) or "both".
    """
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ptype, script in PLUGINS.items():
        targets = {"plain": [ptype], "prefixed": [script], "both": [ptype, script]}[names]
        for name in targets:
            path = bin_dir / name
            if path.exists() and not overwrite and MARKER not in path.read_text(errors="replace"):
                continue
            atomic_write_bytes(path, wrapper_text(ptype).encode(), mode=0o755)
            written.append(path)
    return written
