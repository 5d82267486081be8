"""`kubeletpy up|down|status`: the single-node cluster on this host.

Filled in as the components land; until the agent exists, `up` starts what is
there and says what is not.
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser, name: str) -> None:
    parser.set_defaults(func=_not_yet, command_name=name)


def _not_yet(args: argparse.Namespace) -> int:
    print(f"kubeletpy {args.command_name}: no components are installed yet")
    return 0
