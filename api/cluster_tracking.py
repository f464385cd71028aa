"""Tracked near copies on a Redis Cluster: one invalidation channel per primary.

Redis tracks the keys a connection read on the node that served them, and sends their
invalidations to a redirect client on that same node. So on a cluster the channel of
api.tracking is built once per primary, each against that node alone (its own subscriber,
its own tracked client, its own heartbeat key, whose hash tag puts it in one of the node's
slots). A near read of a key is sent through the channel of the primary that owns the key's
slot, and its copy is marked with that channel's generation; generations are numbered
across all the channels, so a copy's generation names the channel that vouches for it, and
the copy is served with no round trip only while that channel is proven. The staleness bound
of api.tracking holds per node: a heartbeat a node wrote and reported proves every earlier
write of that node reported.

The slot map is read again every `topology_every` seconds. A change of the primaries (a
failover, a node added or removed) builds channels for the new primaries, closes those of
the old, and drops every near copy: a copy read from a node that no longer owns its slot
is not tracked where its key is written now. Until that reload, a demoted primary refuses
the heartbeat (a write), so its channel stops vouching within the bound, as behind Sentinel.
A near read whose channel is not proven, or that the node refuses (a slot that moved), goes
through the main cluster client, checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis, RedisCluster

from api.tracking import ChannelEnded, Listener, TrackingChannel, Watch, cancelled
from mescache.redisconn import make_redis, node_url, parse_redis_url, refresh_topology
from mescache.store import REDIS_FAILURES

log = logging.getLogger("api.tracking")

_NO_CHANNEL = Watch(None, 0, 0)
# Hash tags tried for a node's heartbeat key: a node owning one slot of 16,384 is found in
# about as many tries, one with none at all is not a primary.
_TAGS_TRIED = 200_000


class ClusterTracking:
    """The invalidation channels of a cluster's primaries, as one channel to the near cache.

    `beat_key(tag)` names this process's heartbeat key with hash tag `tag`: the channel of a
    node beats on the first such key whose slot the node owns."""

    def __init__(
        self,
        url: str,
        timeout: float,
        beat_key: Callable[[str], str],
        *,
        bound: float,
        beat: float,
        topology_every: float = 1.0,
        silent_after: float | None = None,
        retry: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.beat_key = beat_key
        self.bound = bound
        self.beat = beat
        self.topology_every = topology_every
        self.silent_after = silent_after
        self.retry = retry
        self.clock = clock
        self.listener: Listener | None = None
        self.channels: dict[str, TrackingChannel] = {}  # by node name, "host:port"
        self._generations = itertools.count(1)
        self._retired = {"lost": 0, "silent": 0, "flushes": 0}  # of closed channels
        self._cluster: RedisCluster | None = None
        self._task: asyncio.Task[None] | None = None

    # -- what the near cache asks ---------------------------------------------------------

    def watch(self, name: str = "") -> Watch:
        """The watch of the channel of the primary that owns `name`'s slot."""
        channel = self._owner(name)
        return channel.watch(name) if channel is not None else _NO_CHANNEL

    def covers(self, watch: Watch, names: tuple[str, ...]) -> bool:
        """Whether the read sent under `watch` may mark its copy (see api.tracking)."""
        channel = self._of(watch.gen)
        return channel is not None and channel.covers(watch, names)

    def proven(self, gen: int) -> bool:
        """Whether the channel that marked a copy under `gen` vouches for it now."""
        channel = self._of(gen)
        return channel is not None and channel.proven(gen)

    @property
    def proven_now(self) -> bool:
        """Whether every primary's channel is proven now."""
        return bool(self.channels) and all(c.proven_now for c in self.channels.values())

    @property
    def losses(self) -> dict[str, int]:
        """Generations ended, by reason, over every channel there has been."""
        return {
            reason: self._retired[reason] + sum(c.losses[reason] for c in self.channels.values())
            for reason in ("lost", "silent")
        }

    @property
    def flushes(self) -> int:
        """Flushes reported, over every channel there has been."""
        return self._retired["flushes"] + sum(c.flushes for c in self.channels.values())

    def _owner(self, name: str) -> TrackingChannel | None:
        if self._cluster is None:
            return None
        try:
            node = self._cluster.get_node_from_key(name)
        except REDIS_FAILURES:  # a slot no node serves (a failover under way)
            return None
        return None if node is None else self.channels.get(node.name)

    def _of(self, gen: int) -> TrackingChannel | None:
        for channel in self.channels.values():
            if channel.gen == gen:
                return channel
        return None

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Read the slot map and build a channel per primary; keep them current."""
        self._cluster = cast(RedisCluster, make_redis(self.url, self.timeout, 2))
        self._task = asyncio.get_running_loop().create_task(self._follow_topology())

    async def close(self) -> None:
        """Stop every channel; copies are served checked from now on."""
        await cancelled(self._task)
        self._task = None
        for name in list(self.channels):
            await self._retire(name)
        if self._cluster is not None:
            with contextlib.suppress(*REDIS_FAILURES, OSError):
                await self._cluster.aclose()

    async def _follow_topology(self) -> None:
        while True:
            try:
                await self._reconcile()
            except (*REDIS_FAILURES, OSError, ChannelEnded) as exc:
                log.debug("cluster topology not read, kept as it was", extra={"error": repr(exc)})
            await asyncio.sleep(self.topology_every)

    async def _reconcile(self) -> None:
        """Channels for the primaries of the slot map as read now, no others."""
        assert self._cluster is not None
        await refresh_topology(cast(Redis, self._cluster))
        primaries = {node.name: node for node in self._cluster.get_primaries()}
        if primaries.keys() == self.channels.keys():
            return
        changed = bool(self.channels)
        for name in set(self.channels) - primaries.keys():
            await self._retire(name)
        target = parse_redis_url(self.url)
        for name in primaries.keys() - set(self.channels):
            node = primaries[name]
            channel = TrackingChannel(
                node_url(target, node.host, int(node.port)),
                self.timeout,
                self._beat_key_on(name),
                bound=self.bound,
                beat=self.beat,
                silent_after=self.silent_after,
                retry=self.retry,
                clock=self.clock,
                generations=self._generations,
            )
            channel.listener = self._relay
            self.channels[name] = channel
            await channel.start()
        if changed:
            log.info(
                "cluster primaries changed, near copies dropped", extra={"nodes": len(primaries)}
            )
            self._relay(None)

    def _beat_key_on(self, node: str) -> str:
        """This process's heartbeat key in one of `node`'s slots."""
        assert self._cluster is not None
        for tag in map(str, range(_TAGS_TRIED)):
            name = self.beat_key(tag)
            owner = self._cluster.get_node_from_key(name)
            if owner is not None and owner.name == node:
                return name
        raise ChannelEnded(f"no heartbeat key found in the slots of {node}")

    async def _retire(self, name: str) -> None:
        channel = self.channels.pop(name)
        await channel.close()
        self._retired["lost"] += channel.losses["lost"]
        self._retired["silent"] += channel.losses["silent"]
        self._retired["flushes"] += channel.flushes

    def _relay(self, names: frozenset[str] | None) -> None:
        if self.listener is not None:
            self.listener(names)
