"""`orders-writer run`: applies accepted status changes from the stream to PostgreSQL.

Delivery contract: every accepted change reaches PostgreSQL exactly once in effect.
Entries are read through a consumer group; an entry is acknowledged only after its
transaction committed (or after it was moved to the dead letters), so a writer killed at
any point leaves it pending, and the next active writer applies it again; the applied
table (writer.apply) turns that replay into a no-op.

Ordering: exactly one writer is active, the one holding a PostgreSQL advisory lock on a
connection of its own (others stand by and retry every WRITER_STANDBY_RETRY seconds; the
lock goes with the holder's session when it dies, even on kill -9). The active writer
applies entries one at a time in stream order, so two changes of one order are applied in
the order they were accepted. On taking over it first claims every entry still pending
with other (dead) consumers once idle for WRITER_CLAIM_IDLE seconds (XAUTOCLAIM; the idle
bound spares a writer that only lost its lock connection a moment ago), and applies those
before reading anything new.

Failures: a lost connection to PostgreSQL or Redis is transient: the writer drops its
connections (and the lock) and retries with jittered backoff, resuming from its pending
entries. A silent one is lost too: every PostgreSQL call has WRITER_DB_TIMEOUT (the
connection is severed past it, mescache.db.severed_after; TCP keepalives and
tcp_user_timeout behind), every Redis call the client's socket timeout. The server may
not notice a silent connection for hours and keeps its session, the advisory lock and
any row lock with it: the writer remembers its own sessions (pid and start time) and ends
exactly those before it takes the lock again, never another writer's. A change
PostgreSQL refuses (illegal move against the row, unknown order), an entry that cannot be
parsed, or one that fails WRITER_MAX_ATTEMPTS times for another reason goes to the
dead-letter stream with its reason.

Settling: see writer.settle. Trimming: entries older than the oldest still pending (or
than the last delivered) are trimmed off the stream now and then; the applied table then
forgets the entries trimmed off (writer.prune).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from typing import cast

import psycopg
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from mescache.db import severed_after, with_liveness
from mescache.durability import require_durable
from mescache.errors import is_retryable
from mescache.keys import KeySchema
from mescache.pending import GROUP, PendingWrites
from mescache.queries import query
from mescache.redisconn import make_redis
from mescache.writes import status_of
from writer.apply import (
    Connection,
    EntryApplied,
    Outcome,
    Rejected,
    apply_entry,
    listener_position,
    position,
)
from writer.entries import StatusEntry, parse_entry, raw_fields
from writer.errors import LockLost, MalformedEntry
from writer.prune import AppliedPruner
from writer.settings import WriterSettings
from writer.settle import SettleQueue

log = logging.getLogger("writer")

_LOCK_CHECK = 1.0  # how often the active writer makes sure it still holds the lock, s


async def _session(conn: Connection) -> tuple[int, object]:
    """The server's backend of `conn`: its pid and start time (a pid alone may be reused)."""
    cur = await conn.execute(query("writer_session"))
    row = await cur.fetchone()
    if row is None:  # a session always sees itself
        raise psycopg.OperationalError("the server does not show this session")
    return row[0], row[1]


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Writer:
    """One writer process: standby until it holds the lock, then the active consumer."""

    def __init__(self, settings: WriterSettings, stop: asyncio.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or asyncio.Event()
        self.keys = KeySchema(settings.key_prefix)
        self.stream = self.keys.write_stream()
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.active = asyncio.Event()  # set while this writer is the active one
        # Longer than any cached row filled before the commit can live (TTL_ORDER).
        self.sealed_ttl = settings.ttl_order * 2
        self.applied = 0
        self.dead = 0
        self.pruner = AppliedPruner(self.stream, settings.writer_prune_lag)
        self._sessions: list[tuple[int, object]] = []  # (pid, backend_start) of our last
        self._reached = False  # PostgreSQL answered once: failures from now on are transient

    async def run(self) -> None:
        """Until `stop` is set. Raises RedisNotDurable at once, and a connection error if
        no server could be reached even once (a misconfiguration, said plainly)."""
        cfg = self.settings
        redis = make_redis(cfg.redis_url, max(cfg.redis_timeout, cfg.writer_block + 5.0), 4)
        try:
            await require_durable(redis)
            pending = PendingWrites(redis, self.keys)
            backoff = 0.5
            while not self.stop.is_set():
                try:
                    await self._ensure_group(redis)
                    await self._serve(redis, pending)
                    backoff = 0.5
                except Exception as exc:
                    if not is_retryable(exc):  # the error tree decides (mescache.errors)
                        raise
                    self.active.clear()
                    if not self._reached:
                        raise
                    log.warning("writer failed, retrying in %.1fs: %s", backoff, exc)
                    await self._sleep(backoff * random.uniform(0.5, 1.5))
                    backoff = min(backoff * 2, cfg.writer_backoff_max)
        finally:
            self.active.clear()
            await redis.aclose()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _ensure_group(self, redis: Redis) -> None:
        try:
            # From the stream's start: changes accepted before any writer ran are kept.
            await redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _serve(self, redis: Redis, pending: PendingWrites) -> None:
        """One session: take the lock (or stand by once), then consume while we hold it."""
        bound = self.settings.writer_db_timeout
        url = with_liveness(self.settings.database_url, bound)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as lock_conn:
            async with severed_after(lock_conn, bound):
                await self._end_abandoned(lock_conn)
                cur = await lock_conn.execute(query("writer_lock"), {"stream": self.stream})
                row = await cur.fetchone()
            self._reached = True
            if row is None or not row[0]:
                log.info("standby: another writer is active on %s", self.stream)
                await self._sleep(self.settings.writer_standby_retry * random.uniform(0.8, 1.2))
                return
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                async with severed_after(conn, bound):
                    self._sessions = [await _session(lock_conn), await _session(conn)]
                await self._active(redis, pending, lock_conn, conn)

    async def _end_abandoned(self, conn: Connection) -> None:
        """End the sessions of our last connections if the server still has them (they
        went silent): they may hold the lock and row locks nobody will ever release."""
        if not self._sessions:
            return
        pids = [pid for pid, _ in self._sessions]
        starts = [start for _, start in self._sessions]
        cur = await conn.execute(query("writer_end_sessions"), {"pids": pids, "starts": starts})
        ended = [row[0] for row in await cur.fetchall() if row[1]]
        self._sessions = []
        if ended:
            log.warning("ended this writer's silent sessions pids=%s", ended)
            # Gone within milliseconds; the caller's bound covers a server that hangs.
            while True:
                cur = await conn.execute(query("sessions_alive"), {"pids": ended})
                if await cur.fetchone() is None:
                    break
                await asyncio.sleep(0.02)

    async def _active(
        self,
        redis: Redis,
        pending: PendingWrites,
        lock_conn: Connection,
        conn: Connection,
    ) -> None:
        cfg = self.settings
        bound = cfg.writer_db_timeout
        settle = SettleQueue(self.sealed_ttl)
        # Overlays sealed by an earlier writer that died before settling them.
        async with severed_after(conn, bound):
            at = await position(conn, cfg.cdc_mode)
        for overlay in await pending.sealed_overlays():
            settle.add(at, overlay.order_id, overlay.entry)
        await self._take_over(redis)
        self.active.set()
        log.info("writer active consumer=%s stream=%s", self.consumer, self.stream)
        cursor = "0"  # our own pending entries first (claimed or left by a failure), then new
        next_lock_check = next_settle = 0.0
        next_trim = time.monotonic() + cfg.writer_trim_interval
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_lock_check:
                try:
                    async with severed_after(lock_conn, bound):
                        await lock_conn.execute(query("ping"))
                except psycopg.OperationalError as exc:
                    raise LockLost(f"lock connection lost: {exc}") from exc
                next_lock_check = now + _LOCK_CHECK
            wait = cfg.writer_settle_poll if len(settle) else cfg.writer_block
            # RESP2 reply: [[stream, [(id, fields), ...]]], or nothing when none arrived.
            reply = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None,
                await redis.xreadgroup(
                    GROUP,
                    self.consumer,
                    {self.stream: cursor},
                    count=cfg.writer_batch,
                    block=None if cursor == "0" else _ms(wait),
                ),
            )
            entries = reply[0][1] if reply else []
            if cursor == "0" and not entries:
                cursor = ">"
            for entry_id, fields in entries:
                if self.stop.is_set():
                    return  # unacknowledged entries stay pending for the next writer
                await self._process(
                    redis, pending, conn, settle, entry_id=_text(entry_id), fields=fields
                )
            if len(settle) and time.monotonic() >= next_settle:
                async with severed_after(conn, bound):
                    listener_at = await listener_position(conn, cfg.cdc_mode, cfg.cdc_slot)
                await settle.settle(pending, listener_at)
                next_settle = time.monotonic() + cfg.writer_settle_poll
            if not entries and time.monotonic() >= next_trim:
                await self._trim(redis)
                await self.pruner.run(redis, conn)
                next_trim = time.monotonic() + cfg.writer_trim_interval

    async def _take_over(self, redis: Redis) -> None:
        """Claim every entry other consumers left pending, waiting for the idle bound."""
        idle_ms = _ms(self.settings.writer_claim_idle)
        me = self.consumer.encode()
        while not self.stop.is_set():
            summary = await redis.xpending(self.stream, GROUP)
            others = [c for c in summary["consumers"] if c["name"] != me and c["pending"]]
            if not others:
                break
            start: bytes | str = "0-0"
            while True:
                reply = await redis.xautoclaim(
                    self.stream, GROUP, self.consumer, idle_ms, start, count=100
                )
                start = reply[0]
                if _text(start) == "0-0":
                    break
            summary = await redis.xpending(self.stream, GROUP)
            if any(c["name"] != me and c["pending"] for c in summary["consumers"]):
                log.info(
                    "waiting for a dead writer's entries to be idle %.1fs",
                    self.settings.writer_claim_idle,
                )
                await self._sleep(min(0.2, max(self.settings.writer_claim_idle / 4, 0.01)))
        for consumer in await redis.xinfo_consumers(self.stream, GROUP):
            if consumer["name"] != self.consumer and not consumer["pending"]:
                await redis.xgroup_delconsumer(self.stream, GROUP, consumer["name"])

    async def _process(
        self,
        redis: Redis,
        pending: PendingWrites,
        conn: Connection,
        settle: SettleQueue,
        *,
        entry_id: str,
        fields: dict[bytes, bytes] | None,
    ) -> None:
        ttl_ms = _ms(self.sealed_ttl)
        if fields is None:
            # Deleted from the stream while pending (by hand): nothing left to apply.
            await redis.xack(self.stream, GROUP, entry_id)
            return
        values = raw_fields(fields)
        try:
            entry = parse_entry(entry_id, values)
        except MalformedEntry as exc:
            log.error("dead letter entry=%s reason=%s", entry_id, exc)
            await pending.dead_letter(None, entry_id, ttl_ms, None, {**values, "reason": str(exc)})
            self.dead += 1
            return
        outcome = await self._apply_with_retries(conn, entry)
        if outcome is None:
            return  # stopping: the entry stays pending
        async with severed_after(conn, self.settings.writer_db_timeout):
            at = await position(conn, self.settings.cdc_mode)
        if isinstance(outcome, EntryApplied):
            await pending.seal_and_ack(entry.order_id, entry.entry, ttl_ms)
            self.applied += 1
            log.debug(
                "applied order_id=%d status=%s entry=%s replay=%s",
                entry.order_id,
                entry.status,
                entry.entry,
                outcome.replay,
            )
        else:
            log.error(
                "dead letter order_id=%d entry=%s reason=%s",
                entry.order_id,
                entry.entry,
                outcome.reason,
            )
            await pending.dead_letter(
                entry.order_id,
                entry.entry,
                ttl_ms,
                outcome.actual,
                {**entry.fields(), "reason": outcome.reason},
            )
            self.dead += 1
        settle.add(at, entry.order_id, entry.entry)

    async def _apply_with_retries(self, conn: Connection, entry: StatusEntry) -> Outcome | None:
        """Transient errors propagate (the caller reconnects and resumes); anything else
        is retried with backoff up to WRITER_MAX_ATTEMPTS, then refused."""
        attempts = 0
        bound = self.settings.writer_db_timeout
        while True:
            try:
                async with severed_after(conn, bound):
                    return await apply_entry(conn, entry)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                attempts += 1
                if attempts >= self.settings.writer_max_attempts:
                    async with severed_after(conn, bound):
                        actual = await status_of(conn, entry.order_id)
                    return Rejected(f"failed {attempts} times: {exc}", actual)
                delay = min(0.1 * 2**attempts, self.settings.writer_backoff_max)
                log.warning(
                    "apply failed order_id=%d entry=%s attempt=%d: %s",
                    entry.order_id,
                    entry.entry,
                    attempts,
                    exc,
                )
                await self._sleep(delay * random.uniform(0.5, 1.5))
                if self.stop.is_set():
                    return None

    async def _trim(self, redis: Redis) -> None:
        """Drop entries every one of which is acknowledged: those before the oldest pending
        entry, or before the last delivered one when nothing is pending."""
        summary = await redis.xpending(self.stream, GROUP)
        if summary["pending"]:
            oldest = summary["min"]
        else:
            groups = await redis.xinfo_groups(self.stream)
            mine = [g for g in groups if _text(g["name"]) == GROUP]
            if not mine:
                return
            oldest = mine[0]["last-delivered-id"]
        if _text(oldest) != "0-0":
            await redis.xtrim(self.stream, minid=oldest, approximate=False)
