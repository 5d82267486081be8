"""Events (Pulling, Started, BackOff, Unhealthy, ...) posted without blocking the workers.

The kubelet aggregates repeats: the same (object, reason, message) within ten minutes
bumps `count` and `lastTimestamp` on one Event instead of creating a new one, which keeps
a crash-looping pod from flooding the API. Posting runs in one background task so a slow
API never slows a pod down; a full queue drops events (they are best effort everywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from kubeletpy.apiclient import EVENTS, Client, rfc3339

log = logging.getLogger("kubeletpy.agent.events")
AGGREGATE_WINDOW = 600.0


class Recorder:
    def __init__(self, client: Client | None, node: str, host: str, maxsize: int = 2000) -> None:
        self.client = client
        self.node = node
        self.host = host
        self.queue: asyncio.Queue[tuple[dict[str, Any], str, str, str, str]] = asyncio.Queue(maxsize)
        self._seen: dict[tuple[str, str, str, str], tuple[str, str, int, float]] = {}
        self.posted: list[tuple[str, str, str]] = []  # (pod uid, reason, message): tests/diagnostics

    def emit(self, pod: dict[str, Any], etype: str, reason: str, message: str, field_path: str = "") -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((pod, etype, reason, message, field_path))

    async def run(self) -> None:
        while True:
            pod, etype, reason, message, field_path = await self.queue.get()
            try:
                await self._post(pod, etype, reason, message, field_path)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - events are best effort
                log.debug("event %s for %s not posted: %s", reason, (pod.get("metadata") or {}).get("name"), e)

    async def _post(self, pod: dict[str, Any], etype: str, reason: str, message: str, field_path: str) -> None:
        md = pod.get("metadata") or {}
        uid = md.get("uid", "")
        self.posted.append((uid, reason, message))
        del self.posted[:-500]
        if self.client is None:
            return
        ns = md.get("namespace") or "default"
        now = time.time()
        key = (uid, field_path, reason, message)
        seen = self._seen.get(key)
        if seen is not None and now - seen[3] < AGGREGATE_WINDOW:
            name, first, count, _ = seen
            with contextlib.suppress(Exception):
                await self.client.patch(EVENTS, name, {"count": count + 1, "lastTimestamp": rfc3339(now)}, ns)
                self._seen[key] = (name, first, count + 1, now)
                return
        name = f"{md.get('name', 'pod')}.{secrets.token_hex(8)}"
        involved = {"kind": "Pod", "namespace": ns, "name": md.get("name", ""), "uid": uid, "apiVersion": "v1",
                    "resourceVersion": md.get("resourceVersion", "")}
        if field_path:
            involved["fieldPath"] = field_path
        ts = rfc3339(now)
        await self.client.create(EVENTS, {
            "metadata": {"name": name, "namespace": ns}, "involvedObject": involved, "reason": reason,
            "message": message, "type": etype, "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1, "reportingComponent": "kubelet",
            "reportingInstance": self.node}, ns)
        self._seen[key] = (name, ts, 1, now)
        if len(self._seen) > 5000:
            cutoff = now - AGGREGATE_WINDOW
            self._seen = {k: v for k, v in self._seen.items() if v[3] >= cutoff}
