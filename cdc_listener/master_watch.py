"""A Redis master change is a possible loss: the listener flushes the namespace after one.

Redis replicates asynchronously. A master may acknowledge an invalidation, the listener
then confirm its position to PostgreSQL (which will never resend it), and the master die
before its replica got the write. Sentinel (or the cluster) promotes the replica, which
still holds the old value and the old fence: stale until the TTL, and no replay comes.

Chosen answer: a master change is treated as a loss of the whole namespace. Each master
has a replication ID (``INFO replication`` → ``master_replid``) that a promoted replica
replaces with a new random one (a restart without persistence does too). The listener
keeps the ID it last saw in a mark key in Redis itself and compares it with the master's
every `WATCH_INTERVAL` seconds and when it starts (before it streams: a flush before
ready). A different or missing mark means the master may have lost acknowledged writes:
the namespace is flushed with the listener's usual flush (fences go with the values, so no
fill that read PostgreSQL before can store afterwards, and every possibly stale value is
unlinked), then the mark is set to the new ID. On a cluster the ID is that of every
primary together, so a failover of any shard flushes.

Why the mark lives in Redis, not in the listener's memory: the listener may die with the
master (one host) and a fresh one must still see that the master changed; the promoted
replica holds the old mark (replicated long before) or none, never the new ID. A missing
mark (first start, an eviction, a flush) costs a flush, which a cache can afford; it
never leaves a stale hit.

Why not ``WAIT`` for a replica before confirming a position: it adds a replication round
trip to every batch, stops the slot from advancing while the replica is down (WAL piles
up on PostgreSQL), and still trusts whichever replica Sentinel picks to be the one that
acknowledged. The flush costs a cold cache after each failover, planned ones included
(``CLUSTER FAILOVER`` and ``SENTINEL FAILOVER`` flush too), and a window of stale reads
from the promotion until the next check (at most `WATCH_INTERVAL` plus the time the
listener needs to reach the new master). Positions confirmed in between need no holding
back: the flush that follows covers everything stored before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from mescache.keys import KeySchema
from mescache.redisconn import is_cluster
from mescache.store import RedisStore

log = logging.getLogger("cdc_listener.master_watch")

WATCH_INTERVAL: Final = 1.0


def mark_name(keys: KeySchema) -> str:
    """The key holding the master's replication ID as the listener last saw it."""
    return keys.master_mark()


async def master_identity(redis: Redis) -> str:
    """The replication ID of the master (on a cluster: of every primary, sorted)."""
    if is_cluster(redis):
        cluster = cast(RedisCluster, redis)
        replies = await cluster.info("replication", target_nodes=RedisCluster.PRIMARIES)
        infos = cast(dict[str, dict[str, object]], replies)
        return ",".join(sorted(str(info["master_replid"]) for info in infos.values()))
    info = await redis.info("replication")
    return str(info["master_replid"])


async def settle_master(
    redis: Redis, store: RedisStore, keys: KeySchema, seen: str | None = None
) -> tuple[bool, str]:
    """Flush the namespace unless the master is the one last seen (by this process, `seen`,
    or by any listener, the mark); whether it flushed, and the master's identity.

    The process's own memory comes first: on an evicting Redis the mark may vanish at any
    moment, and a vanished mark of a master this process has been watching all along is no
    sign of a change (its identity would differ): it is written again, without a flush."""
    identity = await master_identity(redis)
    name = mark_name(keys)
    if identity == seen:
        if not await redis.exists(name):
            await redis.set(name, identity)
        return False, identity
    raw = await redis.get(name)
    noted = raw.decode() if isinstance(raw, bytes) else raw
    if noted == identity:
        return False, identity
    removed = await store.flush_matching(keys.namespace_pattern(), keys.outlives_flush)
    await redis.set(name, identity)
    # A master other than the one noted is news for the operator; no mark at all is a first
    # start (or a mark evicted while no listener watched), which is routine.
    log.log(
        logging.WARNING if noted is not None else logging.INFO,
        "redis master changed or unknown, cache namespace flushed",
        extra={"keys": removed, "master": identity[:16], "noted": noted is not None},
    )
    return True, identity


class MasterWatch:
    """Runs `settle_master` at start and every `interval` seconds until closed."""

    def __init__(
        self, redis: Redis, store: RedisStore, keys: KeySchema, interval: float = WATCH_INTERVAL
    ) -> None:
        self.redis = redis
        self.store = store
        self.keys = keys
        self.interval = interval
        self.flushes = 0
        self.seen: str | None = None  # the master's identity this process last checked
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """A first check now (a Redis down at start is left to the periodic one)."""
        await self._check()
        self._task = asyncio.create_task(self._watch(), name="master-watch")

    async def close(self) -> None:
        """Stop watching and close its connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._check()

    async def _check(self) -> None:
        try:
            flushed, self.seen = await settle_master(self.redis, self.store, self.keys, self.seen)
            self.flushes += flushed
        except (RedisError, RedisClusterException, OSError) as exc:
            # The stream's own Redis calls fail too and reconnect; the next check retries.
            log.debug("master check failed: %s", exc)
