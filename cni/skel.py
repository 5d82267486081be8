"""The executable face of our plugins: ``CNI_*`` env + JSON on stdin -> JSON on stdout.

Every console script (``kubeletpy-bridge`` ...) lands in :func:`main`, which
turns each failure into the spec's error object on stdout (and a one-line
note on stderr) with a non-zero exit; the work itself is :func:`cni.plugins.call`,
the same code the runtime calls in-process.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from cni.spec import ERR_DECODE, ERR_IO, ERR_PLUGIN, LATEST_VERSION, CNIArgs, CNIError


def _emit(obj: dict[str, Any] | None) -> None:
    if obj is not None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def lean_pyroute2_import() -> None:
    """Let ``pyroute2.iproute.linux`` load without ``pyroute2/__init__``.

    The package __init__ imports every pyroute2 feature (NDB, IPDB, conntrack,
    wireless...) — ~70 ms of a plugin process's ~250 ms life, for nothing we
    use. In a fresh plugin process (never in the runtime's own process, where
    other code may want the full package) we register a bare package object so
    only the submodules we import get loaded.
    """
    if "pyroute2" in sys.modules:
        return
    import importlib.util
    import types

    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return
    pkg = types.ModuleType("pyroute2")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__file__ = spec.origin
    sys.modules["pyroute2"] = pkg


def main(plugin_type: str) -> int:
    """Run ``plugin_type`` for the request in the environment and on stdin; return the exit code."""
    args = CNIArgs.from_env()
    conf: Any = {}
    version = LATEST_VERSION
    try:
        try:
            raw = sys.stdin.buffer.read()
        except OSError as e:
            raise CNIError(ERR_IO, "failed to read network configuration from stdin", str(e)) from None
        if raw.strip():
            try:
                conf = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CNIError(ERR_DECODE, "failed to decode network configuration", str(e)) from None
        elif args.command != "VERSION":
            raise CNIError(ERR_DECODE, "empty network configuration on stdin")
        if isinstance(conf, dict) and isinstance(conf.get("cniVersion"), str) and conf["cniVersion"]:
            version = conf["cniVersion"]
        from cni.plugins import call as call_plugin
        from cni.plugins import get_plugin
        from cni.spec import format_result

        module = get_plugin(plugin_type)
        if module is None:
            raise CNIError(ERR_PLUGIN, "unknown plugin", plugin_type)
        out = call_plugin(module, conf, args)
        if args.command == "ADD":
            _emit(format_result(out, version))
        elif args.command == "VERSION":
            _emit(out)
        return 0
    except CNIError as e:
        _emit(e.to_dict(version))
        sys.stderr.write(f"{plugin_type}: {e}\n")
        return 1
    except Exception as e:  # a bug: still answer in the protocol, with the traceback on stderr
        import traceback

        traceback.print_exc()
        _emit(CNIError(ERR_PLUGIN, f"{plugin_type} failed unexpectedly", f"{type(e).__name__}: {e}").to_dict(version))
        return 1


def bridge() -> None:
    lean_pyroute2_import()
    sys.exit(main("bridge"))


def host_local() -> None:
    sys.exit(main("host-local"))


def loopback() -> None:
    lean_pyroute2_import()
    sys.exit(main("loopback"))


def portmap() -> None:
    lean_pyroute2_import()
    sys.exit(main("portmap"))


if __name__ == "__main__":
    lean_pyroute2_import()
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
