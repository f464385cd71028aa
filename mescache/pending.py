"""Write-behind status changes: the pending overlay, the stream, and their Lua scripts.

In write-behind mode (``WRITE_BEHIND=true``) a status change is accepted into Redis and
applied to PostgreSQL later by the writer (``orders-writer``). Each step is one script, so
each is atomic on the server:

- ``accept`` (API): checks the move against the order's effective status (its overlay if
  one exists, else the status the API read from the cached or PostgreSQL row), then writes
  the overlay ``order:{id}#pending`` and XADDs the change to ``writes:status``. Two quick
  moves of one order chain: the second is checked against the first's pending status.
- ``seal_and_ack`` (writer, after the PostgreSQL commit): if the overlay still names the
  entry just applied, marks it committed and gives it a TTL; acknowledges the entry.
- ``dead_letter`` (writer): records the entry and a reason in ``writes:status:dead``; the
  overlay, if it still names the entry, is replaced by PostgreSQL's actual status (sealed),
  or removed when the order does not exist; acknowledges the entry.
- ``settle`` (writer, once the listener has applied the commit): removes a sealed overlay
  only if it still names that entry (compare-and-delete).
- ``retry`` (``orders-writer dead-letters retry``): moves a dead letter back to the stream
  as a new entry (``retry_of`` names the old one) and points the overlay at it, as
  ``accept`` does; the dead letter is deleted in the same step, so retrying it twice
  appends it once. The writer then applies it like any entry: exactly once in effect.

Why the API writes this one cache-side key because of a write (the single exception to
"the API never writes a key because it wrote something"): the overlay is not a copy of
PostgreSQL that could go stale, it *is* the pending write, kept where reads merge it over
the cached row until PostgreSQL and the cache have caught up. It is written atomically
with the stream entry, so an overlay exists exactly when a change was accepted; no cache
key (``order:{id}``, its fence, any list) is touched: the listener still invalidates those
for the commit the writer makes. The overlay outlives that invalidation: it is removed
only after the listener has confirmed a position past the commit, so a read never falls
back to the older status a not-yet-invalidated cached row still holds.

The stream, the overlays and the dead letters are writes, not cache: Redis must persist
them (mescache.durability) and the listener's flushes skip them (KeySchema.outlives_flush).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, cast

from redis.asyncio import Redis

from mescache.keys import KeySchema
from mescache.orders import ALLOWED_FROM

GROUP: Final = "orders-writer"  # the writer's consumer group on the stream

# KEYS: overlay, stream. ARGV: order id, target, base status, allowed-from (comma list).
_ACCEPT = """
local current = redis.call('HGET', KEYS[1], 'status') or ARGV[3]
local legal = false
for s in string.gmatch(ARGV[4], '[^,]+') do
  if s == current then legal = true end
end
if not legal then return {0, current} end
local id = redis.call('XADD', KEYS[2], '*',
  'order_id', ARGV[1], 'status', ARGV[2], 'from', current)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'entry', id, 'status', ARGV[2])
return {1, id}
"""

# KEYS: overlay, stream. ARGV: entry, group, sealed TTL ms.
_SEAL_AND_ACK = """
if redis.call('HGET', KEYS[1], 'entry') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'sealed', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
"""

# KEYS: overlay, stream, dead letters. ARGV: entry, group, sealed TTL ms, actual status
# ('' when the order does not exist), then the dead letter's field/value pairs.
_DEAD_LETTER = """
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[3], '*', unpack(fields))
if redis.call('HGET', KEYS[1], 'entry') == ARGV[1] then
  if ARGV[4] == '' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 'status', ARGV[4], 'sealed', '1')
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
end
return redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
"""

# KEYS: overlay. ARGV: entry.
_SETTLE = """
if redis.call('HGET', KEYS[1], 'entry') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'sealed') == '1' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# KEYS: dead letters, stream, overlay. ARGV: dead letter id, order id, target status.
# Re-checks that the dead letter still exists and names that change (another retry or a
# drop may have won), then appends it anew and deletes it.
_RETRY = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {0, ''} end
local fields, old = found[1][2], {}
for i = 1, #fields, 2 do old[fields[i]] = fields[i + 1] end
if old['order_id'] ~= ARGV[2] or old['status'] ~= ARGV[3] then return {0, ''} end
local id = redis.call('XADD', KEYS[2], '*', 'order_id', ARGV[2], 'status', ARGV[3],
  'from', old['from'] or '', 'retry_of', old['entry'] or ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'entry', id, 'status', ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[1])
return {1, id}
"""


@dataclass(frozen=True, slots=True)
class Overlay:
    """An order's pending status: accepted (not yet committed) or sealed (committed, the
    listener may not have applied the commit yet)."""

    order_id: int
    entry: str
    status: str
    sealed: bool


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The outcome of `accept`: the stream entry, or the status that refused the move."""

    accepted: bool
    entry: str | None
    current: str


def merge(body: bytes, overlay: Overlay | None) -> bytes:
    """The cached (or freshly read) order with the pending status over it."""
    if overlay is None:
        return body
    order = json.loads(body)
    if order.get("status") == overlay.status:
        return body
    order["status"] = overlay.status
    return json.dumps(order, separators=(",", ":"), ensure_ascii=False).encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PendingWrites:
    """The scripts above bound to one Redis client and key schema."""

    def __init__(self, redis: Redis, keys: KeySchema) -> None:
        self.redis = redis
        self.keys = keys
        self._accept = redis.register_script(_ACCEPT)
        self._seal = redis.register_script(_SEAL_AND_ACK)
        self._dead = redis.register_script(_DEAD_LETTER)
        self._settle = redis.register_script(_SETTLE)
        self._retry = redis.register_script(_RETRY)

    async def accept(self, order_id: int, target: str, base_status: str) -> Acceptance:
        """Record the move `base_status` (or the pending status) → `target`, if legal."""
        reply = await self._accept(
            keys=[self.keys.pending(order_id), self.keys.write_stream()],
            args=[order_id, target, base_status, ",".join(ALLOWED_FROM[target])],
        )
        if reply[0] == 1:
            return Acceptance(accepted=True, entry=_text(reply[1]), current=target)
        return Acceptance(accepted=False, entry=None, current=_text(reply[1]))

    async def overlay(self, order_id: int) -> Overlay | None:
        """The order's pending status change, if write-behind holds one."""
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.pending(order_id)))
        if b"entry" not in raw or b"status" not in raw:
            return None
        return Overlay(
            order_id=order_id,
            entry=raw[b"entry"].decode(),
            status=raw[b"status"].decode(),
            sealed=raw.get(b"sealed") == b"1",
        )

    async def seal_and_ack(self, order_id: int, entry: str, sealed_ttl_ms: int) -> None:
        """Mark the overlay as written to PostgreSQL and acknowledge its stream entry, at once."""
        await self._seal(
            keys=[self.keys.pending(order_id), self.keys.write_stream()],
            args=[entry, GROUP, sealed_ttl_ms],
        )

    async def dead_letter(
        self,
        order_id: int | None,
        entry: str,
        sealed_ttl_ms: int,
        actual_status: str | None,
        fields: dict[str, str],
    ) -> None:
        """Move an entry to the dead letters (`fields` must carry the reason)."""
        overlay = self.keys.pending(order_id) if order_id is not None else self.keys.pending(0)
        pairs = [part for item in fields.items() for part in item]
        await self._dead(
            keys=[overlay, self.keys.write_stream(), self.keys.dead_letters()],
            args=[entry, GROUP, sealed_ttl_ms, actual_status or "", *pairs],
        )

    async def settle(self, order_id: int, entry: str) -> bool:
        """Remove the overlay if it is sealed and still names `entry`."""
        removed = await self._settle(keys=[self.keys.pending(order_id)], args=[entry])
        return bool(removed)

    async def retry(self, dead_id: str, order_id: int, status: str) -> str | None:
        """Append the dead letter `dead_id` (moving `order_id` to `status`) to the stream
        again; returns the new entry, or None if that dead letter is gone."""
        reply = await self._retry(
            keys=[self.keys.dead_letters(), self.keys.write_stream(), self.keys.pending(order_id)],
            args=[dead_id, order_id, status],
        )
        return _text(reply[1]) if reply[0] == 1 else None

    async def sealed_overlays(self) -> list[Overlay]:
        """Every sealed overlay (the writer re-queues them for settling at start-up)."""
        found: list[Overlay] = []
        async for name in self.redis.scan_iter(match=self.keys.pending_pattern(), count=1000):
            order_id = self.keys.pending_order(_text(name))
            if order_id is None:
                continue
            overlay = await self.overlay(order_id)
            if overlay is not None and overlay.sealed:
                found.append(overlay)
        return found
