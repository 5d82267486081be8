"""`kubeletpy` command line.

Each subcommand lives in its own module exposing `register(parser)`; only the
module of the command being run is imported, so `kubeletpy images list` does not
pay for grpc or aiohttp imports.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "images": ("kubeletpy.cli.images", "manage the image store (pull, import, list, rm, prune, ...)"),
    "runtime": ("kubeletpy.cli.runtime", "run the CRI runtime daemon"),
    "crictl": ("kubeletpy.cli.crictl", "a small CRI client (crictl subset)"),
    "control-plane": ("kubeletpy.cli.controlplane", "run the API server, scheduler and controllers"),
    "agent": ("kubeletpy.cli.agent", "run the node agent (kubelet)"),
    "up": ("kubeletpy.cli.cluster", "start a single-node cluster on this host"),
    "down": ("kubeletpy.cli.cluster", "stop the single-node cluster and clean the host"),
    "status": ("kubeletpy.cli.cluster", "show the state of the local components"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {name: spec for name, spec in COMMANDS.items() if importlib.util.find_spec(spec[0]) is not None}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubeletpy", description="kubeletpy: pods on a Linux host, for real.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in _available().items():
        p = sub.add_parser(name, help=summary, description=summary)
        if only is None or name == only:
            mod = importlib.import_module(module)
            mod.register(p, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    only = first if first in COMMANDS else None
    parser = build_parser(only if only else "__none__")
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc = func(args)
    except KeyboardInterrupt:
        return 130
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return int(rc or 0)


class CLIError(Exception):
    """An error for the user: printed as `error: <message>` with no traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


if __name__ == "__main__":
    sys.exit(main())
