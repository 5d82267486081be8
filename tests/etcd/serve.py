"""Run the API server on an etcd datastore: `python tests/etcd/serve.py --datastore etcd://... ...`.

A test-only launcher for as long as `open_datastore` / `kubeletpy control-plane
--datastore` accept only sqlite:// (the lead wires etcd:// in; see the report). It routes
etcd:// URLs to `EtcdStorage` and otherwise runs exactly what the CLI runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from kubeletpy.controlplane import app
from kubeletpy.controlplane.storage_etcd import EtcdStorage

_orig = app.open_datastore


def _open(url: str):  # type: ignore[no-untyped-def]
    return EtcdStorage.from_url(url) if url.startswith("etcd") else _orig(url)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--datastore", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app.open_datastore = _open  # type: ignore[assignment]
    asyncio.run(app.serve(app.Config(listen=a.listen, data_dir=a.data_dir, kubeconfig=a.kubeconfig,
                                     datastore=a.datastore)))


if __name__ == "__main__":
    main()
