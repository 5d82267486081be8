"""`kubeletpy images …`: the image store from the command line.

The CLI is a thin shell over `cri.images.ImageStore`: it shares the on-disk
store (and its flock-based locking) with the runtime daemon, so both can run at
once. Every store failure is an `ImageError`, shown as `error: …` with exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from kubeletpy.cli import CLIError
from kubeletpy.paths import STATE_ROOT


def register(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--root", default=str(STATE_ROOT), help=f"state directory (default {STATE_ROOT})")
    parser.add_argument("--registries-config", metavar="FILE", help="registries.toml (default /etc/kubeletpy/...)")
    sub = parser.add_subparsers(dest="images_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda a: _help(parser))

    p = sub.add_parser("list", aliases=["ls"], help="list images")
    p.add_argument("-q", "--quiet", action="store_true", help="print image IDs only")
    p.set_defaults(func=_list)

    p = sub.add_parser("pull", help="pull an image from a registry")
    p.add_argument("ref")
    p.add_argument("--creds", metavar="USER[:PASSWORD]", help="registry credentials (else registries.toml)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="pull another platform than the host's")
    p.set_defaults(func=_pull)

    p = sub.add_parser("rm", aliases=["remove"], help="remove images (refuses images in use)")
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("-f", "--force", action="store_true", help="remove even if a container uses the image")
    p.set_defaults(func=_rm)

    p = sub.add_parser("inspect", help="print an image's manifest digest, config and layers as JSON")
    p.add_argument("ref")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("import", help="import a `docker save` or OCI-layout tarball")
    p.add_argument("file")
    p.add_argument("--name", help="repository for images the archive names by tag only")
    p.set_defaults(func=_import)

    p = sub.add_parser("build-busybox", help="build kubeletpy.local/busybox:latest from the host's /bin/busybox")
    p.add_argument("--busybox", default="/bin/busybox", help="busybox binary (default /bin/busybox)")
    p.add_argument("--tag", default="kubeletpy.local/busybox:latest")
    p.set_defaults(func=_build_busybox)

    p = sub.add_parser("prune", help="delete blobs and layers no image or container needs")
    p.set_defaults(func=_prune)

    p = sub.add_parser("fsinfo", help="bytes and inodes used by the image store")
    p.set_defaults(func=_fsinfo)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _store(args: argparse.Namespace) -> Any:
    from cri.images import ImageError, ImageStore

    try:
        return ImageStore(args.root, registries=args.registries_config)
    except ImageError as e:
        raise CLIError(str(e)) from None


def _run(fn: Callable[[], Any]) -> Any:
    from cri.images import ImageError

    try:
        return fn()
    except ImageError as e:
        raise CLIError(str(e)) from None
    except PermissionError as e:
        raise CLIError(f"{e.filename or ''}: permission denied (the image store needs root)") from None


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n}"


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    images = _run(store.list)
    if args.quiet:
        for img in images:
            print(img.id)
        return 0
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for img in images:
        names = img.repo_tags or [d.split("@")[0] + ":<none>" for d in img.repo_digests[:1]] or ["<none>:<none>"]
        for n in names:
            repo, _, tag = n.rpartition(":")
            rows.append((repo, tag, img.id.split(":", 1)[1][:13], human(img.size)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


class Progress:
    """Per-layer progress: redrawn bars on a terminal, one line per state change otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.layers: dict[str, tuple[str, int, int]] = {}
        self.drawn = 0
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, digest: str, status: str, done: int, total: int) -> None:
        with self.lock:
            if status == "resolved":  # the manifest, not a layer: one line above the bars
                print(f"manifest {digest}", file=self.out, flush=True)
                return
            prev = self.layers.get(digest)
            if status in ("unpacking", "unpacked") and prev is not None:
                done, total = prev[1], prev[2]
            self.layers[digest] = (status, done, total)
            if self.tty:
                now = time.monotonic()
                if status == "downloading" and now - self.last < 0.1 and 0 < done < total:
                    return
                self.last = now
                self.redraw()
            elif status != "downloading" or prev is None or prev[0] != "downloading":
                size = f" {human(total)}" if total else ""
                print(f"{digest[7:19]}: {status}{size}", file=self.out, flush=True)

    def line(self, digest: str) -> str:
        status, done, total = self.layers[digest]
        width = 30
        frac = done / total if total else (1.0 if status != "downloading" else 0.0)
        bar = "=" * int(frac * width)
        bar = (bar + (">" if len(bar) < width else "")).ljust(width)
        return f"{digest[7:19]}: {status:<11} [{bar}] {human(done)}/{human(total)}"

    def redraw(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}A")
        for d in self.layers:
            self.out.write("\x1b[2K" + self.line(d) + "\n")
        self.drawn = len(self.layers)
        self.out.flush()


def _parse_creds(creds: str | None) -> tuple[str, str] | None:
    if creds is None:
        return None
    user, sep, password = creds.partition(":")
    if not sep:
        import getpass

        password = getpass.getpass(f"password for {user}: ")
    return user, password


def _parse_platform(s: str | None) -> tuple[str, str, str | None] | None:
    if s is None:
        return None
    parts = s.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise CLIError(f"bad --platform {s!r}: want os/arch[/variant]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _pull(args: argparse.Namespace) -> int:
    store = _store(args)
    auth = _parse_creds(args.creds)
    plat = _parse_platform(args.platform)
    progress = Progress(sys.stderr, sys.stderr.isatty())
    t0 = time.monotonic()
    img = _run(lambda: store.pull(args.ref, auth=auth, progress=progress, platform=plat))
    print(f"pulled {', '.join(img.repo_tags or img.repo_digests)} {img.id} ({human(img.size)} in "
          f"{time.monotonic() - t0:.1f}s)")
    return 0


def _rm(args: argparse.Namespace) -> int:
    store = _store(args)
    failed = False
    for ref in args.refs:
        try:
            removed = _run(lambda ref=ref: store.remove(ref, force=args.force))
        except CLIError as e:
            print(f"error: {e}", file=sys.stderr)
            failed = True
            continue
        for r in removed:
            print(f"untagged {r}")
    if failed:
        raise CLIError("some images were not removed")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    img = _run(lambda: store.get(args.ref))
    json.dump(img.to_json(), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


def _import(args: argparse.Namespace) -> int:
    store = _store(args)
    images = _run(lambda: store.import_archive(args.file, name=args.name))
    for img in images:
        print(f"imported {', '.join(img.repo_tags or img.repo_digests)} {img.id}")
    return 0


def _build_busybox(args: argparse.Namespace) -> int:
    store = _store(args)
    if not os.path.exists(args.busybox):
        raise CLIError(f"{args.busybox} not found (apt-get install busybox-static)")
    img = _run(lambda: store.build_busybox(ref=args.tag, busybox=args.busybox))
    print(f"built {img.repo_tags[0]} {img.id}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    store = _store(args)
    r = _run(store.prune)
    print(f"removed {r.blobs} blobs, {r.layers} layer dirs, freed {human(r.bytes)}")
    return 0


def _fsinfo(args: argparse.Namespace) -> int:
    store = _store(args)
    used, inodes = _run(store.fs_usage)
    print(json.dumps({"mountpoint": str(store.mountpoint), "used_bytes": used, "inodes_used": inodes}))
    return 0
