"""List-then-watch caches (the client-go "informer" idea, in one small class).

An `Informer` keeps an in-memory copy of every object of one resource that matches its
selectors, and calls handlers on add/update/delete. The loop is the standard one:

1. LIST, replace the cache (emitting add/update/delete for the differences, so handlers
   see a consistent story even across a re-list), remember the list's resourceVersion;
2. WATCH from that version; every event (and BOOKMARK) advances the version, so a
   dropped connection resumes exactly where it stopped;
3. a 410 Gone means the version was compacted away: go back to 1.

Handlers run synchronously in the event loop, in event order, so a handler sees the cache
already updated; they must not block (queue work instead).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from .client import Client
from .errors import ApiError, GoneError, TransportError
from .resources import Resource, object_key

log = logging.getLogger("kubeletpy.apiclient.informer")

Handler = Callable[..., None]


class Informer:
    def __init__(self, client: Client, res: Resource, namespace: str = "", *, label_selector: str = "",
                 field_selector: str = "", watch_timeout: int = 300) -> None:
        self.client = client
        self.res = res
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.watch_timeout = watch_timeout
        self.store: dict[str, dict[str, Any]] = {}
        self.resource_version = ""
        self._synced = asyncio.Event()
        self._on_add: list[Handler] = []
        self._on_update: list[Handler] = []
        self._on_delete: list[Handler] = []
        self.relists = 0

    def add_handlers(self, on_add: Handler | None = None, on_update: Handler | None = None,
                     on_delete: Handler | None = None) -> None:
        """on_add(obj), on_update(old, new), on_delete(obj)."""
        if on_add:
            self._on_add.append(on_add)
        if on_update:
            self._on_update.append(on_update)
        if on_delete:
            self._on_delete.append(on_delete)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._synced.wait(), timeout)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.store.get(key)

    def items(self) -> list[dict[str, Any]]:
        return list(self.store.values())

    # ------------------------------------------------------------------ dispatch

    def _emit(self, handlers: list[Handler], *args: Any) -> None:
        for h in handlers:
            try:
                h(*args)
            except Exception:
                log.exception("%s informer handler failed", self.res.plural)

    def _apply(self, typ: str, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        if typ == "DELETED":
            old = self.store.pop(key, None)
            if old is not None:
                self._emit(self._on_delete, obj)
            return
        old = self.store.get(key)
        self.store[key] = obj
        if old is None:
            self._emit(self._on_add, obj)
        else:
            self._emit(self._on_update, old, obj)

    def _replace(self, items: list[dict[str, Any]]) -> None:
        fresh = {object_key(o): o for o in items}
        for key in [k for k in self.store if k not in fresh]:
            self._emit(self._on_delete, self.store.pop(key))
        for key, obj in fresh.items():
            old = self.store.get(key)
            if old is not None and (old.get("metadata") or {}).get("resourceVersion") == (
                    obj.get("metadata") or {}).get("resourceVersion"):
                continue
            self.store[key] = obj
            if old is None:
                self._emit(self._on_add, obj)
            else:
                self._emit(self._on_update, old, obj)

    # ------------------------------------------------------------------ loop

    async def _list(self) -> None:
        lst = await self.client.list(self.res, self.namespace, label_selector=self.label_selector,
                                     field_selector=self.field_selector)
        self._replace(lst.get("items") or [])
        self.resource_version = str((lst.get("metadata") or {}).get("resourceVersion") or "")
        self._synced.set()

    async def run(self) -> None:
        """Run forever (cancel to stop). Run again after a cancel and it resumes from the last version seen."""
        backoff = 0.2
        need_list = not (self.synced and self.resource_version)
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                async for ev in self.client.watch(
                        self.res, self.namespace, resource_version=self.resource_version,
                        label_selector=self.label_selector, field_selector=self.field_selector,
                        timeout_seconds=int(self.watch_timeout * random.uniform(0.8, 1.0)) or 1):
                    rv = (ev.object.get("metadata") or {}).get("resourceVersion")
                    if ev.type != "BOOKMARK":
                        self._apply(ev.type, ev.object)
                    if rv:
                        self.resource_version = str(rv)
                    backoff = 0.2
            except GoneError:
                log.info("%s watch at %s expired; re-listing", self.res.plural, self.resource_version)
                need_list = True
                self.relists += 1
            except (TransportError, ApiError) as e:
                log.debug("%s list/watch failed: %s; retrying in %.1fs", self.res.plural, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s informer failed", self.res.plural)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
