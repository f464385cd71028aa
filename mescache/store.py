"""The fenced Redis store: cache-aside fills that cannot store stale data, and the
idempotent invalidations and refreshes the listener sends.

Every operation is one Lua script (mescache.scripts, with its KEYS and ARGV) whose keys
share one hash slot (mescache.keys), so each is atomic on the server and runs unchanged on
a single Redis, behind Sentinel or on Redis Cluster:

- ``begin_fill``: the value if present (and, for a family member, still valid); otherwise
  the key's fences and, for one caller at a time, a short lease to fill it (the others
  wait: stampede control).
- ``finish_fill``: stores only if every fence still holds the value read before the
  SELECT, so an invalidation that landed during the SELECT wins (the stale-set race). A
  key of several families (a price: its model, its material, all prices) is fenced by each.
- ``read``: a value with its token (the fences it stands under), or only "unchanged" when
  the caller already holds that token (api.nearcache keeps large values in process).
- ``release``: a fill that failed (the row does not exist) gives its lease back.
- ``invalidate``: for keys, delete and move the fence; for families, move the family's
  fence (and free the members its tag set lists). A batch's keys and families go in one
  call per slice.
- ``refresh``: write a value the listener computed, move the fence so no older fill can
  overwrite it, and, for values carrying a commit position, refuse an older position.

Why it holds on a Redis that evicts any key at any moment (``maxmemory`` with any policy),
or loses keys to a restart or a flush:
- A value that vanishes is a miss.
- A fence that vanishes never compares equal to one read before: a fill whose fence is
  missing at its finish stores nothing, and a fence created anew (by a fill's begin or a
  refresh) starts at the server clock in nanoseconds, past any value that name held
  before (it moved at most once per invalidation, far fewer than one per nanosecond). An
  invalidation moves only a fence that exists: no fill can hold one that is missing.
- A family's members are never found through its tag set for correctness: a member keeps
  the fences it was filled under in ``#token`` and is served only while they stand, so an
  invalidation that moves the family fence makes every member unreachable at once, whether
  or not the tag set (which only frees their memory early) survived. A missing token is a
  miss. A key of its own fence is deleted by each invalidation and needs no token.
- A lease that vanishes lets a second fill run; both are fenced.
- A refresh whose commit position (``#version``) vanished invalidates instead of writing:
  it cannot tell whether the value it would overwrite is newer.
- Invalidations run with ``allow-oom``: on a full ``noeviction`` Redis they still delete
  (fills are refused meanwhile, and the API reads from PostgreSQL).
So no namespace-wide key is needed: a flush deletes every key, fences included (twice
over, see `flush_matching`), which works slot by slot on a cluster.

All listener-side scripts are idempotent: replaying them (at-least-once delivery) leaves
the same state or moves a counter that only serves as a fence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar, cast

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.typing import EncodableT

from mescache import scripts
from mescache.keys import CacheKey
from mescache.redisconn import refresh_topology

AnyRedis: TypeAlias = Redis | RedisCluster
T = TypeVar("T")
# What a failing Redis raises: on a cluster also slot-map errors (SlotNotCoveredError and
# the like), which are no RedisError.
REDIS_FAILURES: Final = (RedisError, RedisClusterException)

# A fence outlives any fill by far; it expires only so that idle keys leave no residue.
FENCE_TTL_MS: Final = 86_400_000

_INVALIDATE_SLICE = 300  # keys per invalidation call: long scripts would stall other clients

# Price request counts kept at most (warm-up reads the top few hundred).
PRICE_COUNTS_MAX: Final = 10_000


class ClusterClientRace(RedisClusterException):
    """A call on the cluster client failed inside redis-py (a connection closed under it)."""


@dataclass(frozen=True, slots=True)
class Counter:
    """A member of a sorted set that counts how often it was asked for."""

    zset: str
    member: str


@dataclass(frozen=True, slots=True)
class ReadReply:
    """What `read` found: nothing valid (value None, not unchanged), the held token standing
    (unchanged), or the value with its current token (empty when it cannot be kept)."""

    unchanged: bool
    pttl_ms: int
    value: bytes | None = None
    token: bytes = b""


@dataclass(frozen=True, slots=True)
class Observed:
    """A cached value with what would move if anything invalidated or replaced it."""

    value: bytes | None
    fences: tuple[bytes | None, ...]
    token: bytes | None  # a family member's: the fences it was filled under
    member: bool

    @property
    def served(self) -> bytes | None:
        """The value a read would serve: a family member's only under standing fences."""
        if not self.member:
            return self.value
        if self.token is None or None in self.fences:
            return None
        return self.value if self.token == b":".join(f or b"" for f in self.fences) else None


@dataclass(frozen=True, slots=True)
class FillTicket:
    """What begin_fill found: a value, or the fence to fill against (and whether we lead)."""

    value: bytes | None
    fence: bytes
    leased: bool


class Commands:
    """Commands queued for one round trip (RedisStore.send)."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[tuple[EncodableT, ...]] = []

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: EncodableT) -> None:
        """Queue one script call."""
        self.items.append(("EVALSHA", sha, numkeys, *keys_and_args))

    def command(self, *args: EncodableT) -> None:
        """Queue any other command (on a cluster, one whose first argument after the name is
        the key that routes it)."""
        self.items.append(args)


def version_key(key: CacheKey) -> str:
    """The name of the refresh version kept beside a key."""
    return f"{key.name}#version"


def lsn_version(lsn: int) -> str:
    """A commit position as a fixed-width string, so Lua compares it exactly as text."""
    return f"{lsn:016x}"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _read_keys(key: CacheKey) -> list[str]:
    return [key.name, *key.fences, *([key.token] if key.token else [])]


class RedisStore:
    """The scripts above bound to one Redis client (a single server or a cluster)."""

    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        self.cluster = isinstance(redis, RedisCluster)
        self._begin = redis.register_script(scripts.BEGIN_FILL)
        self._finish = redis.register_script(scripts.FINISH_FILL)
        self._release = redis.register_script(scripts.RELEASE)
        self._read = redis.register_script(scripts.READ)
        self._count = redis.register_script(scripts.COUNT)
        self._observe = redis.register_script(scripts.OBSERVE)
        self._invalidate = redis.register_script(scripts.INVALIDATE)
        self._refresh = redis.register_script(scripts.REFRESH)
        # _send_single's connection, taken from the pool and kept (closing the client closes
        # it with the pool's others)
        self._held: AbstractConnection | None = None
        self._sending = asyncio.Lock()

    async def _guarded(self, call: Awaitable[T]) -> T:
        """`call`'s result. redis-py's cluster client may disconnect a node's connections
        while other commands still use them (after one of them failed): those then fail
        with AttributeError, TypeError or RuntimeError (a closed transport) from inside the
        client, which is a failed call like any other (REDIS_FAILURES), not a bug to answer
        500 for."""
        try:
            if self.cluster:
                # Start the client before its first concurrent calls: started by the calls
                # themselves, it loses connections under them ("Connection lost"). A no-op
                # once started.
                await cast(RedisCluster, self.redis).initialize()
            return await call
        except (AttributeError, TypeError, RuntimeError) as exc:
            if not self.cluster:
                raise
            raise ClusterClientRace(f"the cluster client failed mid-call: {exc!r}") from exc

    async def get(self, key: CacheKey) -> bytes | None:
        """The value, if present and (for a family member) still valid."""
        if key.token is None:
            return cast(bytes | None, await self._guarded(self.redis.get(key.name)))
        return (await self.read(key, b"")).value

    async def read(self, key: CacheKey, held: bytes) -> ReadReply:
        """Validate the token `held` for the key's value (b"" when none) in one round trip."""
        reply = await self._guarded(self._read(keys=_read_keys(key), args=[held, len(key.fences)]))
        if reply[0] == 0:
            return ReadReply(unchanged=False, pttl_ms=-2)
        if reply[0] == 1:
            return ReadReply(unchanged=True, pttl_ms=int(reply[1]))
        return ReadReply(unchanged=False, pttl_ms=int(reply[1]), value=reply[3], token=reply[2])

    async def count(self, counts: dict[Counter, int], kept: int = PRICE_COUNTS_MAX) -> None:
        """Add request counts to their sorted sets, each holding at most `kept` members
        (`_COUNT`), in one round trip."""
        sha = self._count.sha

        def queue(cmds: Commands) -> None:
            for counter, times in counts.items():
                for _ in range(times):
                    cmds.evalsha(sha, 1, counter.zset, counter.member, kept)

        await self.send(queue)

    async def observe(self, keys: Sequence[CacheKey]) -> list[Observed]:
        """Each key's value, fences and token, each key read atomically, in one round trip
        (per node on a cluster): what the checker compares before and after its grace."""
        sha = self._observe.sha
        layouts = [_read_keys(key) for key in keys]

        def queue(cmds: Commands) -> None:
            for names in layouts:
                cmds.evalsha(sha, len(names), *names)

        replies = await self.send(queue)
        seen = []
        for key, reply in zip(keys, replies, strict=True):
            values: list[bytes | None] = [v or None for v in reply]
            member = key.token is not None
            fences = tuple(values[1 : 1 + len(key.fences)])
            seen.append(Observed(values[0], fences, values[-1] if member else None, member))
        return seen

    async def begin_fill(self, key: CacheKey, lease_s: float, token: str) -> FillTicket:
        """Start a fenced fill: the value if cached, else the fences now and whether this reader
        holds the lease."""
        reply = await self._guarded(
            self._begin(
                keys=[key.name, key.lease, *_read_keys(key)[1:]],
                args=[_ms(lease_s), token, len(key.fences), 2 * _ms(lease_s) + 1000],
            )
        )
        if reply[0] == 1:
            return FillTicket(value=reply[1], fence=b"", leased=False)
        return FillTicket(value=None, fence=reply[1], leased=reply[2] == 1)

    async def finish_fill(
        self, key: CacheKey, value: bytes, ttl_s: float, fence: bytes, token: str
    ) -> bool:
        """Store a filled value only if no fence moved since begin_fill; whether it was stored."""
        keys = [key.name, key.lease, *_read_keys(key)[1:], *key.tags]
        args: list[EncodableT] = [
            value,
            _ms(ttl_s),
            fence,
            token,
            len(key.fences),
            int(key.token is not None),
            FENCE_TTL_MS,
        ]
        return bool(await self._guarded(self._finish(keys=keys, args=args)))

    async def release(self, key: CacheKey, token: str) -> None:
        """Give back a lease whose fill failed, so the next reader need not wait it out."""
        await self._guarded(self._release(keys=[key.lease], args=[token]))

    async def flush_matching(
        self, pattern: str, keep: Callable[[str], bool] = lambda _: False
    ) -> int:
        """Forget every key matching a SCAN pattern (on every primary of a cluster): a whole
        namespace after a gap in the change stream, or every ``order:*`` after a TRUNCATE.

        Fences go with their values, and a fill whose fence is missing at its finish stores
        nothing; but a fill that began before the flush may store between the scan's passing
        its value and its passing its fence. So the scan runs twice: after the first pass no
        fill begun before the flush can store, and the second removes what such fills stored
        meanwhile. Keys `keep` names (pending writes, which are not cache) stay. Idempotent.
        """
        removed = 0
        for _ in range(2):
            batch: list[bytes] = []
            async for name in self.redis.scan_iter(match=pattern, count=1000):
                if not keep(name.decode()):
                    batch.append(name)
                if len(batch) >= 1000:
                    removed += await self._unlink(batch)
                    batch.clear()
            if batch:
                removed += await self._unlink(batch)
        return removed

    async def drop_idle_connections(self) -> None:
        """After a failure: connections opened before it may be as silent as the one that
        timed out, so close the idle ones (a cluster reloads its slot map instead)."""
        with contextlib.suppress(*REDIS_FAILURES, OSError):
            if self.cluster:
                await refresh_topology(cast(Redis, self.redis))
            else:
                await cast(Redis, self.redis).connection_pool.disconnect(inuse_connections=False)

    async def _unlink(self, names: list[bytes]) -> int:
        if not self.cluster:
            return int(await self.redis.unlink(*names))
        # A cluster unlinks key by key (each may live on another node), in one pipeline.
        async with self.redis.pipeline() as pipe:
            for name in names:
                pipe.execute_command("UNLINK", name)  # the cluster's unlink() splits by slot
            return sum(int(n) for n in await pipe.execute())

    # Listener side: actions are queued, then sent in one round trip (send). Queued as plain
    # EVALSHA: redis-py's scripts on a pipeline ask SCRIPT EXISTS before every execute, a
    # second round trip per batch. A Redis that lost the scripts (restart, SCRIPT FLUSH)
    # answers NoScriptError instead; send loads them and sends the batch again, which its
    # idempotence allows.

    async def send(self, queue: Callable[[Commands], None]) -> list[Any]:
        """Queue commands with `queue` and send them in one round trip; their replies.
        If Redis lost the scripts, load them and send once more: every queued action is
        idempotent, so those that did run may run again."""
        commands = Commands()
        queue(commands)
        if not commands.items:
            return []
        try:
            return await self._send_once(commands.items)
        except NoScriptError:
            for script in (
                self._invalidate,
                self._refresh,
                self._count,
                self._observe,
            ):
                await self.redis.script_load(script.script)
            return await self._send_once(commands.items)

    async def _send_once(self, items: list[tuple[EncodableT, ...]]) -> list[Any]:
        if self.cluster:
            return await self._send_cluster(items)
        return await self._send_single(items)

    async def _send_cluster(self, items: list[tuple[EncodableT, ...]]) -> list[Any]:
        """A cluster pipeline sends each node its commands (routed by their keys' slot).
        After a failure the slot map is reloaded: without retries a pipeline would keep
        going to a master that has died."""
        try:
            await cast(RedisCluster, self.redis).initialize()  # as in _guarded
            async with self.redis.pipeline() as pipe:
                for item in items:
                    pipe.execute_command(*item)
                replies = await pipe.execute(raise_on_error=False)
        except REDIS_FAILURES:
            await refresh_topology(cast(Redis, self.redis))
            raise
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return list(replies)

    async def _send_single(self, items: list[tuple[EncodableT, ...]]) -> list[Any]:
        """Write every command, then read every reply, on the store's own connection: what
        redis-py's pipeline does, without its per-command bookkeeping (measured here: a
        one-command batch takes a fifth less time), nor the pool's per-call acquire and
        release (a third of a small batch's round trip). One sender at a time: replies are
        read in the order the commands went out.

        The pool checks a connection before handing it out; a held one may have been closed
        by the server since (a restart). A connection error on it is answered by sending the
        batch again once on a fresh connection, which idempotence allows."""
        async with self._sending:
            reused = self._held is not None
            try:
                return await self._send_held(items)
            except RedisConnectionError:
                if not reused:
                    raise
            return await self._send_held(items)

    async def _send_held(self, items: list[tuple[EncodableT, ...]]) -> list[Any]:
        pool = cast(Redis, self.redis).connection_pool
        conn = self._held
        if conn is None:
            conn = self._held = await pool.get_connection()  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        error: ResponseError | None = None
        try:
            await conn.send_packed_command(conn.pack_commands(items), check_health=False)
            for _ in items:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # the others ran: read their replies too
                    error = error or exc
                    replies.append(exc)
        except BaseException:
            # A reply left unread would be taken as the next batch's: the connection goes
            # back to the pool closed, and the next batch takes another.
            self._held = None
            await conn.disconnect()
            await pool.release(conn)
            raise
        if error is not None:
            raise error
        return replies

    def queue_invalidate(self, cmds: Commands, *keys: CacheKey) -> None:
        """Queue the invalidation of keys (value, fence and lease each)."""
        self.queue_invalidations(cmds, [(k.name, k.fence, k.lease) for k in keys])

    def queue_invalidate_family(self, cmds: Commands, family: str, fence: str) -> None:
        """Queue the invalidation of a family: every member's fence moves at once."""
        self.queue_invalidations(cmds, families=[(family, fence)])

    def queue_invalidations(
        self,
        cmds: Commands,
        keys: Sequence[tuple[str, str, str]] = (),
        families: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Invalidate keys given as (value, fence, lease) names (KeySchema.order_names) and
        families as (tag set, fence) names: one script call per slice of
        `_INVALIDATE_SLICE` of them, on a cluster each of one slot."""
        slices: list[tuple[list[tuple[str, ...]], list[tuple[str, ...]]]] = []
        if self.cluster:
            by_slot: dict[int, tuple[list[tuple[str, ...]], list[tuple[str, ...]]]] = {}
            for triple in keys:
                by_slot.setdefault(key_slot(triple[0].encode()), ([], []))[0].append(triple)
            for pair in families:
                by_slot.setdefault(key_slot(pair[0].encode()), ([], []))[1].append(pair)
            slices = list(by_slot.values())
        elif keys or families:
            slices = [(list(keys), list(families))]
        sha = self._invalidate.sha
        for triples, pairs in slices:
            groups = [*triples, *pairs]
            for start in range(0, len(groups), _INVALIDATE_SLICE):
                part = groups[start : start + _INVALIDATE_SLICE]
                counted = max(0, min(len(triples) - start, len(part)))
                flat = [name for names in part for name in names]
                cmds.evalsha(sha, len(flat), *flat, counted, FENCE_TTL_MS)

    def queue_refresh(
        self, cmds: Commands, key: CacheKey, value: bytes, ttl_s: float, version: str | None
    ) -> None:
        """Queue a refresh: the new value, unless a newer version is already stored."""
        keys = [key.name, key.fence, key.lease]
        args: list[bytes | str | int] = [value, _ms(ttl_s), FENCE_TTL_MS]
        if version is not None:
            keys.append(version_key(key))
            args.append(version)
        cmds.evalsha(self._refresh.sha, len(keys), *keys, *args)
