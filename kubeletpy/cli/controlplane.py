"""`kubeletpy control-plane`: run the API server, and with it the scheduler and controllers.

Flags mirror the issue: --listen HOST:PORT, --data-dir DIR (certs, tokens, SQLite),
--kubeconfig PATH (the admin kubeconfig written on start), --datastore URL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path


def register(parser: argparse.ArgumentParser, name: str) -> None:
    from kubeletpy.controlplane.app import DEFAULT_DATA_DIR, DEFAULT_KUBECONFIG

    parser.add_argument("--listen", default="0.0.0.0:6443", metavar="HOST:PORT",
                        help="HTTPS listen address (port 0 picks a free one; default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                        help="certificates, hashed tokens, join token and the SQLite datastore "
                             "(default %(default)s)")
    parser.add_argument("--kubeconfig", type=Path, default=DEFAULT_KUBECONFIG, metavar="PATH",
                        help="where to write the admin kubeconfig (default %(default)s)")
    parser.add_argument("--datastore", default="", metavar="URL",
                        help="sqlite:///path/state.db[?sync=full|normal] or etcd://h1:2379,h2:2379,... (default: state.db in the data dir, sync=full)")
    parser.add_argument("--compaction-interval", type=float, default=300.0, metavar="SECONDS",
                        help="watch history kept before compaction (default %(default)s)")
    parser.add_argument("--tls-san", action="append", default=[], metavar="NAME_OR_IP",
                        help="extra name or address for the serving certificate (repeatable)")
    parser.add_argument("--controllers", action=argparse.BooleanOptionalAction, default=True,
                        help="run the scheduler and controllers (node IPAM, node lifecycle) in this process")
    from kubeletpy.controllers.cli import add_flags

    add_flags(parser)  # --cluster-cidr, --node-monitor-grace-period, --[no-]leader-elect, ...
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from kubeletpy.cli import CLIError
    from kubeletpy.controllers.cli import options_from_args
    from kubeletpy.controlplane.app import Config, ConfigError, serve

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        Config(listen=args.listen).host_port()
    except ValueError:
        raise CLIError(f"--listen must be HOST:PORT, got {args.listen!r}", 2) from None
    config = Config(listen=args.listen, data_dir=args.data_dir, kubeconfig=args.kubeconfig,
                    datastore=args.datastore, compaction_interval=args.compaction_interval,
                    extra_sans=list(args.tls_san),
                    controllers=options_from_args(args) if args.controllers else None)
    try:
        asyncio.run(serve(config))
    except ConfigError as e:
        raise CLIError(str(e), 2) from None
    except OSError as e:
        raise CLIError(f"control-plane: {e}") from None
    return 0
