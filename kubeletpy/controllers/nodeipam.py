"""Node IPAM: give every Node a pod CIDR (`spec.podCIDR` + `spec.podCIDRs`) from the cluster CIDR.

The allocator is a bitmap over the cluster CIDR cut into `/mask` blocks (default a /24 per
node out of 10.244.0.0/16: 256 nodes of 254 pods). It keeps no state of its own: on start
the controller marks every CIDR already written on a Node as taken before it allocates
anything, so a restart (or a new leader) never hands out a block twice. A Node's block is
released when the Node is deleted. Allocation rotates from the last block handed out, so
a block that was just released is not immediately reused (stale routes to the old node
have time to go away).

Dual stack: `cluster_cidr` may be "v4cidr,v6cidr"; each node then gets one block of each
(v6 blocks are /64 unless told otherwise).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from kubeletpy.apiclient import NODES, ApiError, Client, Informer, NotFoundError, TransportError

log = logging.getLogger("kubeletpy.controllers.nodeipam")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class CIDRExhaustedError(Exception):
    pass


class CIDRAllocator:
    """Blocks of one prefix length inside one cluster CIDR."""

    def __init__(self, cluster_cidr: str, mask_size: int | None = None) -> None:
        self.cluster: Network = ipaddress.ip_network(cluster_cidr.strip(), strict=True)
        if mask_size is None:
            mask_size = 24 if self.cluster.version == 4 else 64
        if not self.cluster.prefixlen <= mask_size <= self.cluster.max_prefixlen:
            raise ValueError(f"node CIDR mask /{mask_size} does not fit in cluster CIDR {self.cluster}")
        if mask_size - self.cluster.prefixlen > 24:
            raise ValueError(f"cluster CIDR {self.cluster} holds too many /{mask_size} blocks")
        self.mask = mask_size
        self.size = 1 << (mask_size - self.cluster.prefixlen)
        self._used: set[int] = set()
        self._next = 0

    def _index(self, cidr: str) -> int | None:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            return None
        if net.version != self.cluster.version or net.prefixlen != self.mask or not net.subnet_of(self.cluster):
            return None
        return (int(net.network_address) - int(self.cluster.network_address)) >> (self.cluster.max_prefixlen
                                                                                   - self.mask)

    def _cidr(self, index: int) -> str:
        addr = int(self.cluster.network_address) + (index << (self.cluster.max_prefixlen - self.mask))
        return str(ipaddress.ip_network((addr, self.mask)))

    def owns(self, cidr: str) -> bool:
        return self._index(cidr) is not None

    def occupy(self, cidr: str) -> bool:
        """Mark a block taken (an existing Node's). False when it is not one of ours."""
        i = self._index(cidr)
        if i is None:
            return False
        self._used.add(i)
        return True

    def release(self, cidr: str) -> None:
        i = self._index(cidr)
        if i is not None:
            self._used.discard(i)

    def allocate(self) -> str:
        if len(self._used) >= self.size:
            raise CIDRExhaustedError(f"no free /{self.mask} left in {self.cluster}")
        for step in range(self.size):
            i = (self._next + step) % self.size
            if i not in self._used:
                self._used.add(i)
                self._next = (i + 1) % self.size
                return self._cidr(i)
        raise CIDRExhaustedError(f"no free /{self.mask} left in {self.cluster}")

    @property
    def used(self) -> int:
        return len(self._used)


class NodeIPAMController:
    def __init__(self, client: Client, cluster_cidr: str = "10.244.0.0/16", mask_size: int | None = None,
                 mask_size_v6: int | None = None) -> None:
        self.client = client
        self.allocators: list[CIDRAllocator] = []
        for part in [c for c in cluster_cidr.split(",") if c.strip()]:
            net = ipaddress.ip_network(part.strip())
            self.allocators.append(CIDRAllocator(part, mask_size if net.version == 4 else mask_size_v6))
        if not self.allocators or len({a.cluster.version for a in self.allocators}) != len(self.allocators):
            raise ValueError(f"--cluster-cidr {cluster_cidr!r}: one CIDR, or one IPv4 and one IPv6")
        self.informer = Informer(client, NODES)
        self._assigned: dict[str, list[str]] = {}  # node -> CIDRs we know it holds
        self._work: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._synced = False
        self.informer.add_handlers(self._on_node, lambda _old, new: self._on_node(new), self._on_delete)

    def _enqueue(self, name: str) -> None:
        if name not in self._queued:
            self._queued.add(name)
            self._work.put_nowait(name)

    def _on_node(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        cidrs = list((node.get("spec") or {}).get("podCIDRs") or [])
        if not cidrs and (node.get("spec") or {}).get("podCIDR"):
            cidrs = [node["spec"]["podCIDR"]]
        if cidrs:
            for c in cidrs:
                for a in self.allocators:
                    a.occupy(c)
            self._assigned[name] = cidrs
        elif self._synced:
            self._enqueue(name)

    def _on_delete(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        cidrs = self._assigned.pop(name, None) or list((node.get("spec") or {}).get("podCIDRs") or [])
        for c in cidrs:
            for a in self.allocators:
                a.release(c)
        if cidrs:
            log.info("released %s of deleted node %s", ",".join(cidrs), name)
            if self._synced:  # nodes left waiting on a full range can have the freed block
                for other in self.informer.items():
                    if not (other.get("spec") or {}).get("podCIDR"):
                        self._enqueue(other["metadata"]["name"])

    async def run(self) -> None:
        inf = asyncio.create_task(self.informer.run(), name="nodeipam-informer")
        try:
            await self.informer.wait_synced()
            # Every existing block is marked (handlers ran during the list) before anything is allocated.
            self._synced = True
            for node in self.informer.items():
                if not (node.get("spec") or {}).get("podCIDR"):
                    self._enqueue(node["metadata"]["name"])
            while True:
                name = await self._work.get()
                self._queued.discard(name)
                await self._allocate(name)
        finally:
            inf.cancel()
            await asyncio.gather(inf, return_exceptions=True)

    async def _allocate(self, name: str) -> None:
        node = self.informer.get(name)
        if node is None or (node.get("spec") or {}).get("podCIDR") or name in self._assigned:
            return
        try:
            cidrs = [a.allocate() for a in self.allocators]
        except CIDRExhaustedError as e:
            log.error("node %s: %s", name, e)
            return
        try:
            await self.client.patch(NODES, name, {"spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}},
                                    field_manager="node-ipam-controller")
            self._assigned[name] = cidrs
            log.info("node %s: pod CIDR %s", name, ",".join(cidrs))
        except NotFoundError:
            self._release(cidrs)
        except (ApiError, TransportError) as e:
            self._release(cidrs)
            log.warning("node %s: could not set pod CIDR: %s; retrying", name, e)
            asyncio.get_running_loop().call_later(1.0, self._enqueue, name)

    def _release(self, cidrs: list[str]) -> None:
        for c in cidrs:
            for a in self.allocators:
                a.release(c)
