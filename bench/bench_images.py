#!/usr/bin/env python3
"""Image store figures: pull+unpack vs skopeo+umoci, and snapshot prepare+mount.

Runs as root against a throwaway docker-registry on 127.0.0.1 (Debian's
docker-registry, skopeo and umoci must be installed). Prints medians; it is a
measurement, not a test, so it asserts nothing.

    .venv/bin/python bench/bench_images.py [--runs 7] [--snapshots 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cri.images import ImageStore  # noqa: E402
from cri.images.config import RegistriesConfig  # noqa: E402
from cri.images.snapshot import Snapshotter  # noqa: E402
from tests.images.helpers import D, Entry, F, Layout, Registry  # noqa: E402


def make_layer(i: int) -> list[Entry]:
    """~1.7 MB of incompressible data in 1 big + 100 small files, so both size and file count matter."""
    entries: list[Entry] = [D(f"layer{i}"), F(f"layer{i}/big.bin", os.urandom(1_200_000))]
    entries += [F(f"layer{i}/f{j:03}", os.urandom(5_000)) for j in range(100)]
    return entries


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def bench_pull(tmp: Path, runs: int) -> None:
    (tmp / "reg").mkdir()
    reg = Registry(tmp / "reg")
    try:
        lay = Layout(tmp / "oci")
        lay.tag(lay.image([make_layer(i) for i in range(3)]), "v1")
        reg.push(lay.path, "v1", "bench/img:v1")
        ref = f"{reg.host}/bench/img:v1"
        ours, theirs = [], []
        size = 0
        for r in range(runs):
            root = tmp / f"root{r}"
            t = time.perf_counter()
            img = ImageStore(root, registries=RegistriesConfig()).pull(ref)
            ours.append(time.perf_counter() - t)
            size = img.size
            shutil.rmtree(root)

            oci, bundle = tmp / f"skopeo{r}", tmp / f"bundle{r}"
            t = time.perf_counter()
            subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:v1"],
                           check=True)
            subprocess.run(["umoci", "unpack", "--image", f"{oci}:v1", str(bundle)], check=True,
                           stdout=subprocess.DEVNULL)
            theirs.append(time.perf_counter() - t)
            shutil.rmtree(oci)
            shutil.rmtree(bundle)
        print(f"pull+unpack of a 3-layer {size / 1e6:.1f} MB image from a local docker-registry ({runs} runs)")
        print(f"  kubeletpy ImageStore.pull     median {median_ms(ours):7.1f} ms  (min {min(ours) * 1000:.1f})")
        print(f"  skopeo copy + umoci unpack    median {median_ms(theirs):7.1f} ms  (min {min(theirs) * 1000:.1f})")
        print(f"  ratio kubeletpy / skopeo+umoci: {statistics.median(ours) / statistics.median(theirs):.2f}")
    finally:
        reg.stop()


def bench_snapshots(tmp: Path, n: int) -> None:
    root = tmp / "snaproot"
    store = ImageStore(root, registries=RegistriesConfig())
    img = store.build_busybox()
    snaps = Snapshotter(root, store)
    prep, rm = [], []
    for i in range(n):
        key = f"{i:064x}"
        t = time.perf_counter()
        snaps.prepare(key, img)
        prep.append(time.perf_counter() - t)
        t = time.perf_counter()
        snaps.remove(key)
        rm.append(time.perf_counter() - t)
    print(f"overlay snapshot of busybox ({n} runs)")
    print(f"  prepare + mount  median {median_ms(prep):.2f} ms  p90 {sorted(prep)[int(n * 0.9)] * 1000:.2f} ms")
    print(f"  unmount + remove median {median_ms(rm):.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--snapshots", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_images: run as root (overlay mounts, chown in layers)", file=sys.stderr)
        return 1
    for tool in ("docker-registry", "skopeo", "umoci"):
        if shutil.which(tool) is None:
            print(f"bench_images: {tool} is not installed (make install)", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="bench-images-") as d:
        bench_pull(Path(d), args.runs)
        bench_snapshots(Path(d), args.snapshots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
