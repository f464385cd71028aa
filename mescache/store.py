"""The fenced Redis store: cache-aside fills that cannot store stale data, and the
idempotent invalidations and refreshes the listener sends.

Every operation is one Lua script, so each is atomic on the server:

- ``begin_fill``: the value if present; otherwise the key's fence and, for one caller at a
  time, a short lease to fill it (the others wait: stampede control).
- ``finish_fill``: stores only if the fences still hold the values read before the SELECT,
  so an invalidation that landed during the SELECT wins (the stale-set race). A key of
  several families (a price: its model, its material, all prices) is fenced by each.
- ``near_get``: for a value a process keeps in memory (api.nearcache), whether the token
  it holds still stands: a short reply if so, else the value with its current token.
- ``release``: a fill that failed (the row does not exist) gives its lease back.
- ``invalidate`` / ``invalidate_family``: delete and move the fence.
- ``refresh``: write a value the listener computed, move the fence so no older fill can
  overwrite it, and, for values carrying a commit position, refuse an older position.

All listener-side scripts are idempotent: replaying them (at-least-once delivery) leaves
the same state or moves a counter that only serves as a fence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry
from redis.typing import EncodableT

from mescache.keys import CacheKey

# A fence outlives any fill by far; it expires only so that idle keys leave no residue.
FENCE_TTL_MS: Final = 86_400_000

# A missing epoch starts at the server's clock in microseconds, never at 0: after a Redis
# restart without persistence every fence is gone, and a fill that read PostgreSQL before
# the restart must not match the empty state it finds afterwards (an invalidation may have
# happened in between and been lost with the restart). The value is an integer, so a flush
# can INCR it.
_EPOCH_OR_START = """
local function epoch_of(name)
  local e = redis.call('GET', name)
  if e then return e end
  local t = redis.call('TIME')
  e = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', name, e)
  return e
end
"""

# A fill's fence is the namespace's epoch and every fence of the key, read together:
# KEYS = value, lease, epoch, fence...
_BEGIN_FILL = (
    _EPOCH_OR_START
    + """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
local g = epoch_of(KEYS[3])
for i = 4, #KEYS do g = g .. ':' .. (redis.call('GET', KEYS[i]) or '0') end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1]) then return {0, g, 1} end
return {0, g, 0}
"""
)

# KEYS = epoch: a flush moves it (and starts it from the clock if a restart lost it).
_MOVE_EPOCH = (
    _EPOCH_OR_START
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
return epoch_of(KEYS[1])
"""
)

# KEYS = value, lease, epoch, ARGV[5] fences, then the tag sets to register in. A single
# moved fence (the key's, or any of its families') refuses the store.
_FINISH_FILL = """
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
local last = 3 + tonumber(ARGV[5])
local g = redis.call('GET', KEYS[3]) or '0'
for i = 4, last do g = g .. ':' .. (redis.call('GET', KEYS[i]) or '0') end
if g ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = last + 1, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return 1
"""

# KEYS = value, epoch, ARGV[2] fences, then optionally a counter's sorted set; ARGV = the
# token the caller holds, the number of fences, the counter's member. The token is the one
# begin_fill reads (without starting a missing epoch: no token then, so nothing is kept).
# Replies: {0} missing; {1, pttl} the held token stands; {2, pttl, token, value}.
_NEAR_GET = """
local last = 2 + tonumber(ARGV[2])
if ARGV[3] then redis.call('ZINCRBY', KEYS[last + 1], 1, ARGV[3]) end
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then return {0} end
local g = redis.call('GET', KEYS[2])
if g then
  for i = 3, last do g = g .. ':' .. (redis.call('GET', KEYS[i]) or '0') end
  if g == ARGV[1] then return {1, pttl} end
else
  g = ''
end
return {2, pttl, g, redis.call('GET', KEYS[1])}
"""

# KEYS = lease; ARGV = the holder's token: a failed fill hands the lease back at once.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS holds (value, fence, lease) triples: one call invalidates a whole slice of keys.
_INVALIDATE = """
for i = 1, #KEYS, 3 do
  redis.call('DEL', KEYS[i], KEYS[i + 2])
  redis.call('INCR', KEYS[i + 1])
  redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
end
return #KEYS / 3
"""
_INVALIDATE_SLICE = 300  # keys per call: long scripts would stall other clients

# Members are deleted in slices: unpack() of a huge table overflows Lua's stack.
_INVALIDATE_FAMILY = """
local members = redis.call('SMEMBERS', KEYS[1])
for i = 1, #members, 500 do
  redis.call('DEL', unpack(members, i, math.min(i + 499, #members)))
end
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return #members
"""

_REFRESH = """
if #KEYS >= 4 then
  -- an equal position is a replay or the delayed second pass: write it again
  local current = redis.call('GET', KEYS[4])
  if current and current > ARGV[4] then return 0 end
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Counter:
    """A member of a sorted set that counts how often it was asked for."""

    zset: str
    member: str


@dataclass(frozen=True, slots=True)
class NearReply:
    """What near_get found: nothing (value None, not unchanged), the held token standing
    (unchanged), or the value with its current token (empty when there is none)."""

    unchanged: bool
    pttl_ms: int
    value: bytes | None = None
    token: bytes = b""


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
        self.items.append(("EVALSHA", sha, numkeys, *keys_and_args))


def make_redis(url: str, timeout: float, max_connections: int) -> Redis:
    """A client whose calls fail fast: the caller decides what a failure means. A call
    that timed out drops its connection (redis-py disconnects on a timeout), so a silent
    connection is never reused; TCP keepalives let the kernel notice idle dead ones."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        # Under load, wait for a free connection rather than fail; a long wait means a
        # slow Redis, which is a failure like any other.
        timeout=timeout * 2,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        # No retries: one failing call trips the API's breaker instead of tripling the wait.
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)


def version_key(key: CacheKey) -> str:
    return f"{key.name}#version"


def lsn_version(lsn: int) -> str:
    """A commit position as a fixed-width string, so Lua compares it exactly as text."""
    return f"{lsn:016x}"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore:
    """The scripts above bound to one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._begin = redis.register_script(_BEGIN_FILL)
        self._finish = redis.register_script(_FINISH_FILL)
        self._release = redis.register_script(_RELEASE)
        self._near_get = redis.register_script(_NEAR_GET)
        self._move_epoch = redis.register_script(_MOVE_EPOCH)
        self._invalidate = redis.register_script(_INVALIDATE)
        self._invalidate_family = redis.register_script(_INVALIDATE_FAMILY)
        self._refresh = redis.register_script(_REFRESH)

    async def get(self, key: CacheKey, counter: Counter | None = None) -> bytes | None:
        """The value; with a counter, also counts the request in the same round trip."""
        if counter is None:
            return cast(bytes | None, await self.redis.get(key.name))
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(key.name)
        pipe.zincrby(counter.zset, 1, counter.member)
        value, _ = await pipe.execute()
        return cast(bytes | None, value)

    async def near_get(
        self, key: CacheKey, held: bytes, counter: Counter | None = None
    ) -> NearReply:
        """Validate the token `held` for the key's value (b"" when none) in one round trip;
        with a counter, also counts the request."""
        keys = [key.name, key.epoch, *key.fences]
        args: list[bytes | str | int] = [held, len(key.fences)]
        if counter is not None:
            keys.append(counter.zset)
            args.append(counter.member)
        reply = await self._near_get(keys=keys, args=args)
        if reply[0] == 0:
            return NearReply(unchanged=False, pttl_ms=-2)
        if reply[0] == 1:
            return NearReply(unchanged=True, pttl_ms=int(reply[1]))
        return NearReply(unchanged=False, pttl_ms=int(reply[1]), value=reply[3], token=reply[2])

    async def begin_fill(self, key: CacheKey, lease_s: float, token: str) -> FillTicket:
        reply = await self._begin(
            keys=[key.name, key.lease, key.epoch, *key.fences], args=[_ms(lease_s), token]
        )
        if reply[0] == 1:
            return FillTicket(value=reply[1], fence=b"", leased=False)
        return FillTicket(value=None, fence=reply[1], leased=reply[2] == 1)

    async def finish_fill(
        self, key: CacheKey, value: bytes, ttl_s: float, fence: bytes, token: str
    ) -> bool:
        stored = await self._finish(
            keys=[key.name, key.lease, key.epoch, *key.fences, *key.tags],
            args=[value, _ms(ttl_s), fence, token, len(key.fences)],
        )
        return bool(stored)

    async def release(self, key: CacheKey, token: str) -> None:
        """Give back a lease whose fill failed, so the next reader need not wait it out."""
        await self._release(keys=[key.lease], args=[token])

    async def flush_matching(
        self, pattern: str, epoch: str, keep: Callable[[str], bool] = lambda _: False
    ) -> int:
        """Forget every key matching a SCAN pattern: a whole namespace after a gap in the
        change stream, or every ``order:*`` after a TRUNCATE.

        The epoch moves first, so a fill that read the database before the flush cannot
        store afterwards; then every matching key but the epoch and those `keep` names
        (pending writes, which are not cache) is unlinked. Idempotent.
        """
        await self._move_epoch(keys=[epoch])
        removed = 0
        batch: list[bytes] = []
        async for name in self.redis.scan_iter(match=pattern, count=1000):
            if name != epoch.encode() and not keep(name.decode()):
                batch.append(name)
            if len(batch) >= 1000:
                removed += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self.redis.unlink(*batch)
        return removed

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
            for script in (self._invalidate, self._invalidate_family, self._refresh):
                await self.redis.script_load(script.script)
            return await self._send_once(commands.items)

    async def _send_once(self, items: list[tuple[EncodableT, ...]]) -> list[Any]:
        """Write every command, then read every reply, on one pooled connection: what
        redis-py's pipeline does, without its per-command bookkeeping (measured here: a
        one-command batch takes a fifth less time)."""
        pool = self.redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
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
            # A reply left unread would be taken as the next batch's.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if error is not None:
            raise error
        return replies

    def queue_invalidate(self, cmds: Commands, *keys: CacheKey) -> None:
        self.queue_invalidate_names(cmds, [(k.name, k.fence, k.lease) for k in keys])

    def queue_invalidate_names(
        self, cmds: Commands, triples: Sequence[tuple[str, str, str]]
    ) -> None:
        """Invalidate keys given as (value, fence, lease) names (KeySchema.order_names)."""
        sha = self._invalidate.sha
        for start in range(0, len(triples), _INVALIDATE_SLICE):
            names = [
                name for triple in triples[start : start + _INVALIDATE_SLICE] for name in triple
            ]
            cmds.evalsha(sha, len(names), *names, FENCE_TTL_MS)

    def queue_invalidate_family(self, cmds: Commands, family: str, fence: str) -> None:
        cmds.evalsha(self._invalidate_family.sha, 2, family, fence, FENCE_TTL_MS)

    def queue_refresh(
        self, cmds: Commands, key: CacheKey, value: bytes, ttl_s: float, version: str | None
    ) -> None:
        keys = [key.name, key.fence, key.lease]
        args: list[bytes | str | int] = [value, _ms(ttl_s), FENCE_TTL_MS]
        if version is not None:
            keys.append(version_key(key))
            args.append(version)
        cmds.evalsha(self._refresh.sha, len(keys), *keys, *args)
