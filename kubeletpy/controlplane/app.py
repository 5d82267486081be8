"""Process lifecycle of `kubeletpy control-plane`: data dir, certificates, tokens, the
datastore, the HTTPS listener, and periodic compaction.

Several instances run side by side as long as their `--data-dir`, `--listen` and
`--kubeconfig` differ. `--listen HOST:0` picks a free port; the chosen address is printed
(`serving on https://...`) and written into the admin kubeconfig.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import signal
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from kubeletpy.paths import ETC_ROOT, STATE_ROOT

from . import kubeconfig, pki
from .auth import (
    ADMIN,
    ADMIN_USER,
    KUBELET_CLIENT_USER,
    TokenStore,
    ensure_join_token,
    retire_kubelet_client_token,
)
from .registry import Registry
from .server import APIServer
from .storage import Storage, open_datastore

log = logging.getLogger("kubeletpy.controlplane")

DEFAULT_DATA_DIR = STATE_ROOT / "controlplane"
DEFAULT_KUBECONFIG = ETC_ROOT / "admin.kubeconfig"


@dataclass
class Config:
    listen: str = "0.0.0.0:6443"
    data_dir: Path = DEFAULT_DATA_DIR
    kubeconfig: Path = DEFAULT_KUBECONFIG
    datastore: str = ""                 # default: sqlite:///<data_dir>/state.db
    compaction_interval: float = 300.0  # seconds of watch history kept (at least)
    extra_sans: list[str] = field(default_factory=list)
    # kubeletpy.controllers.Options: run the scheduler and controllers in this process (None: don't)
    controllers: Any = None

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        return host, int(port)


class ConfigError(ValueError):
    """A bad flag value found while starting (reported as a usage error by the CLI)."""


class ControlPlane:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.storage: Storage | None = None
        self.registry: Registry | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._tasks: list[asyncio.Task] = []
        self._controllers: asyncio.Task | None = None

    async def start(self) -> None:
        cfg = self.config
        data = cfg.data_dir
        try:
            host, port = cfg.host_port()
        except ValueError:
            raise ConfigError(f"--listen must be HOST:PORT, got {cfg.listen!r}") from None
        pki.ensure_dir(data)
        try:
            self.storage = open_datastore(cfg.datastore or f"sqlite://{(data / 'state.db').resolve()}")
        except ValueError as e:
            raise ConfigError(f"--datastore: {e}") from None
        pki_dir = data / "pki"
        crt, key = pki.ensure_serving_cert(pki_dir, [host, *cfg.extra_sans])
        ca = pki.ca_pem(pki_dir)
        pki.ensure_ca(pki_dir, pki.KUBELET_SERVING_CA, pki.KUBELET_SERVING_CA_NAME)
        tokens = TokenStore(data / "tokens.json")
        ensure_join_token(tokens, data)
        agent_client = pki.ensure_client_cert(pki_dir, "apiserver-kubelet-client", KUBELET_CLIENT_USER,
                                              ["system:masters"])
        retire_kubelet_client_token(tokens, data)
        self.registry = Registry(self.storage)
        await self.registry.bootstrap()
        server = APIServer(self.registry, tokens, ca, agent_client=agent_client,
                           agent_ca_pem=ca + (pki_dir / f"{pki.KUBELET_SERVING_CA}.crt").read_bytes())
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(str(crt), str(key))
        tls.set_alpn_protocols(["http/1.1"])
        # handler_cancellation: a client that goes away ends its watch at once, not at the next event.
        # shutdown_timeout: open watches must not hold up a restart for aiohttp's default minute.
        self.runner = web.AppRunner(server.app(), handler_cancellation=True, access_log=None,
                                    shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=tls, backlog=1024, reuse_address=True)
        await site.start()
        server_obj = getattr(site, "_server", None)
        sockets = getattr(server_obj, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        advertise = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if ":" in advertise:
            advertise = f"[{advertise}]"
        self.url = f"https://{advertise}:{bound_port}"
        self._write_admin_kubeconfig(tokens, ca)
        self._tasks.append(asyncio.create_task(self._compactor()))
        if cfg.controllers is not None:
            # They talk to this server over HTTPS with the admin kubeconfig, like
            # kube-scheduler and kube-controller-manager; leader election keeps one active.
            from kubeletpy.controllers import run_in_control_plane

            opts = cfg.controllers
            if not opts.cluster_signing_cert_file:  # the signer in this process: the agents' serving CA
                opts.cluster_signing_cert_file = str(pki_dir / f"{pki.KUBELET_SERVING_CA}.crt")
                opts.cluster_signing_key_file = str(pki_dir / f"{pki.KUBELET_SERVING_CA}.key")
            self._controllers = asyncio.create_task(run_in_control_plane(cfg.kubeconfig, cfg.controllers))
        print(f"kubeletpy control-plane: serving on {self.url} (data dir {data}, kubeconfig {cfg.kubeconfig})",
              file=sys.stderr, flush=True)

    def _write_admin_kubeconfig(self, tokens: TokenStore, ca: bytes) -> None:
        """Keep the admin token of an existing kubeconfig if it is still valid; mint one otherwise."""
        path = self.config.kubeconfig
        existing = kubeconfig.load(path) if path.exists() else None
        token = ""
        if existing:
            server, ca_data, tok = kubeconfig.current(existing)
            user = tokens.authenticate(tok) if tok else None
            if user is not None and user.is_admin:
                token = tok
                if server == self.url and ca_data == base64.b64encode(ca).decode():
                    return
        if not token:
            token = tokens.mint(ADMIN)
        path.parent.mkdir(parents=True, exist_ok=True)
        kubeconfig.write(path, self.url, ca, token, ADMIN_USER)

    async def _compactor(self) -> None:
        """Keep at least one interval of history: compact to the revision seen an interval ago."""
        assert self.storage is not None
        previous = self.storage.revision
        while True:
            await asyncio.sleep(self.config.compaction_interval)
            current = self.storage.revision
            try:
                await self.storage.compact(previous)
            except Exception:
                log.exception("compaction failed")
            previous = current

    async def stop(self) -> None:
        if self._controllers is not None:
            # Before the listener goes: they release their leader Leases over HTTPS.
            self._controllers.cancel()
            await asyncio.gather(self._controllers, return_exceptions=True)
        for t in self._tasks:
            t.cancel()
        if self.storage is not None:
            self.storage.end_watches()
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runner.cleanup(), 5)
        if self.registry is not None:
            await self.registry.close()
        if self.storage is not None:
            await self.storage.close()


async def serve(config: Config) -> None:
    # Request handling allocates many short-lived dicts; the default gen-0 threshold (700) makes the
    # collector run every few requests and shows up as tail latency. Freeze the startup heap and
    # collect less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    cp = ControlPlane(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cp.start()
        await stop.wait()
    finally:
        await cp.stop()
