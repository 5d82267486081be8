"""Garbage collection of dead containers and unused images.

Containers: for every (pod, container name) keep the newest `max_dead_per_container`
exited instances -- the newest is what `lastState` and `kubectl logs --previous` read --
and remove the older ones. Images: when the image filesystem is fuller than
`image_gc_high` (85 %), remove images no container uses, largest first, until it is below
`image_gc_low` (80 %) -- measured on the filesystem ImageFsInfo names, after each removal,
since image sizes (compressed bytes) understate what removing an image frees. Both only
ever touch objects through CRI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from kubeletpy.agent import labels as L

if TYPE_CHECKING:
    from kubeletpy.agent.agent import Agent

log = logging.getLogger("kubeletpy.agent.gc")


def dead_to_remove(containers: list[Any], keep: int) -> list[str]:
    """Ids of exited containers beyond the current one and the newest `keep` older ones,
    per (pod uid, kind, name)."""
    from kubeletpy.agent.cri import pb

    groups: dict[tuple[str, str, str], list[Any]] = {}
    for c in containers:
        k = (c.labels.get(L.POD_UID, ""), c.labels.get(L.CONTAINER_KIND, ""), c.labels.get(L.CONTAINER_NAME, ""))
        groups.setdefault(k, []).append(c)
    out: list[str] = []
    for items in groups.values():
        items.sort(key=lambda c: (int(c.annotations.get(L.RESTART_COUNT, "0") or 0), c.created_at), reverse=True)
        # items[0] is the current instance (running, or exited and waiting for its restart):
        # never collected; of the older ones, the newest `keep` exited ones stay.
        older = [c for c in items[1:] if c.state == pb.CONTAINER_EXITED]
        out += [c.id for c in older[keep:]]
    return out


def images_to_remove(images: list[Any], in_use: set[str], used: int, capacity: int, high: float,
                     low: float) -> list[Any]:
    if capacity <= 0 or used / capacity <= high:
        return []
    target = int(capacity * low)
    out = []
    for img in sorted(images, key=lambda i: -int(i.size)):
        if used <= target:
            break
        names = {img.id, *img.repo_tags, *img.repo_digests}
        if names & in_use or img.pinned:
            continue
        out.append(img)
        used -= int(img.size)
    return out


def old_enough(agent: Agent, images: list[Any], now: float | None = None) -> list[Any]:
    """The images first seen at least `image_min_age` ago (the kubelet's imageMinimumGCAge):
    an image pulled a moment ago for a pod that has not started yet is not garbage. First
    sightings are remembered per agent run, as the kubelet does."""
    now = time.monotonic() if now is None else now
    seen = agent.image_first_seen
    present = {i.id for i in images}
    for gone in set(seen) - present:
        del seen[gone]
    for i in images:
        seen.setdefault(i.id, now)
    return [i for i in images if now - seen[i.id] >= agent.cfg.image_min_age]


def fs_used(path: str) -> tuple[int, int] | None:
    """(used, capacity) bytes of the filesystem `path` is on, measured now; used is what is not
    available to unprivileged writers (reserved blocks count as used), like the kubelet's."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    capacity = st.f_blocks * st.f_frsize
    return capacity - st.f_bavail * st.f_frsize, capacity


async def collect(agent: Agent, force_images: bool = False) -> tuple[int, int]:
    """One pass; (containers removed, images removed). `force_images` (node-pressure reclaim,
    eviction.py) removes every unused image old enough, however full the filesystem is."""
    high, low = (-1.0, 0.0) if force_images else (agent.cfg.image_gc_high, agent.cfg.image_gc_low)
    snap = agent.pleg.snapshot
    all_ctrs = [c for cs in snap.containers.values() for c in cs]
    removed = 0
    for cid in dead_to_remove(all_ctrs, agent.cfg.max_dead_per_container):
        with contextlib.suppress(Exception):
            await agent.cri.remove_container(cid)
            removed += 1
    images_removed = 0
    try:
        fs = await agent.cri.image_fs_info()
        # every pass, not only under pressure: an image's age counts from when we first saw it
        eligible = old_enough(agent, await agent.cri.list_images())
    except Exception:  # noqa: BLE001
        fs, eligible = [], []
    for f in fs:
        mount = f.fs_id.mountpoint
        measured = fs_used(mount)
        if measured is None:
            continue
        used, capacity = measured
        if capacity <= 0 or used / capacity <= high:
            continue
        in_use = set()
        for c in all_ctrs:
            in_use.add(c.image_ref)
            in_use.add(c.image.image)
        target = capacity * low
        done = 0
        for img in images_to_remove(eligible, in_use, used, capacity, high, low):
            # The plan counts image sizes, which are compressed bytes, while an image also takes its
            # unpacked layers on disk: it frees more than planned, so the filesystem says when to stop.
            now = fs_used(mount) if done else measured
            if now is None or now[0] <= target:
                break
            try:
                await agent.cri.remove_image(img.id)
                done += 1
                log.info("image GC removed %s (%d bytes)", (list(img.repo_tags) or [img.id])[0], img.size)
            except Exception as e:  # noqa: BLE001
                log.info("image GC could not remove %s: %s", img.id, e)
        images_removed += done
        after = fs_used(mount) or measured
        log.info("image GC: %s was %.1f%% full (%s): removed %d images, now %.1f%%", mount, 100 * used / capacity,
                 "node-pressure reclaim" if force_images else f"> {100 * high:.0f}%", done, 100 * after[0] / capacity)
    if removed:
        await agent.pleg.relist_now()
    return removed, images_removed


async def run(agent: Agent) -> None:
    while True:
        await asyncio.sleep(agent.cfg.gc_period)
        try:
            await collect(agent)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            log.warning("garbage collection: %s", e)
