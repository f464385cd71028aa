"""Source 1: the logical replication consumer (pgoutput over a persistent slot).

Delivery contract: at least once, nothing lost, commit order. Changes of a transaction are
held until its Commit; committed transactions are merged into a batch that is applied when
the socket has no more data waiting (a burst becomes one round trip) or when the batch is
large. The position confirmed to the server is the end of the last commit whose Redis
work has completed, including the delayed second pass that closes the visibility gap
(a walsender may hand over a commit a moment before other sessions' snapshots see it, so
a fill in that moment could read the old row; the second pass removes what it stored).
Between transactions the keepalive's WAL end is confirmed too, so a slot on a database
whose published tables are idle does not pin WAL.

Liveness: when nothing arrives for a share of CDC_LIVENESS_TIMEOUT the status update asks
the server for a reply; when nothing at all arrives within the bound the connection is
dead (StreamSilent) and the daemon reconnects. The server may still believe the old
walsender alive and hold the slot for it: the next source ends exactly that walsender
(cdc_listener.slot.take_back), never another listener's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import psycopg

from cdc_listener.apply import Applier, Batch, merge_batches
from cdc_listener.decoder import load_decoder
from cdc_listener.errors import ProtocolViolation, StreamSilent
from cdc_listener.liveness import PROBE_SHARE, application_name, bounded
from cdc_listener.metrics import Applied, ListenerMetrics
from cdc_listener.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Relation,
    Truncate,
    Update,
)
from cdc_listener.publish import ChangePublisher
from cdc_listener.relations import RelationCache, RowImages, changes_of
from cdc_listener.replication import (
    Keepalive,
    format_lsn,
    parse_copy_data,
    parse_lsn,
    pg_now,
    pg_time_to_unix,
    standby_status,
    xlog_payload,
    xlog_send_time,
)
from cdc_listener.settings import ListenerSettings
from cdc_listener.slot import (
    Walsender,
    check_wal_level,
    ensure_slot,
    find_walsender,
    on_primary,
    take_back,
)
from cdc_listener.transport import ReplicationStream
from mescache.db import with_liveness
from mescache.keys import KeySchema
from mescache.orders import Order
from mescache.queries import query
from mescache.rules import Touched, add_change
from mescache.store import RedisStore

log = logging.getLogger("cdc_listener.logical")

_ROW_CHANGES = frozenset({Insert, Update, Delete, Truncate})
_UPDATE = ord("U")
_BEGIN = ord("B")
_BEGIN_SIZE = 21  # the tag, final LSN, commit time and xid

# A second pass that comes due rides along with the next batch's round trip; only when no
# commit arrives for this long after it is due does it take a round trip of its own. On a
# busy stream second passes then cost no round trip that a fresh commit could queue behind
# (at 200 commits/s nearly all ride along), at the price of confirming and announcing a
# batch up to this much later on a quiet one. Seconds.
_RECHECK_SLACK = 0.05

# Each confirmation wakes the walsender, which updates the slot: at hundreds of commits a
# second, confirming each one costs both processes CPU that the next commit is waiting for.
# A moved position is confirmed at most this often (a crash replays at most this much
# more, which at-least-once delivery allows). Seconds.
_REPORT_GAP = 0.02

# Messages read between two turns given to the event loop's other tasks while data keeps
# coming (each turn costs a few microseconds).
_YIELD_EVERY = 256


class _Transaction:
    """The changes of the transaction being received, not yet committed."""

    def __init__(self) -> None:
        self.touched = Touched()
        self.images: dict[int, Order | None] = {}
        self.changes = 0


class LogicalSource:
    """Consumes the slot until `stop` is set; raises on any failure (the caller retries)."""

    def __init__(
        self,
        settings: ListenerSettings,
        applier: Applier,
        store: RedisStore,
        keys: KeySchema,
        publisher: ChangePublisher,
        *,
        metrics: ListenerMetrics,
        previous: Walsender | None = None,
    ) -> None:
        """`previous`: the walsender of this process's last stream, ended if it still
        holds the slot (its connection went silent, the server has not noticed yet)."""
        self.settings = settings
        self.previous = previous
        self.walsender: Walsender | None = None  # this source's own, once streaming
        self._liveness = settings.cdc_liveness_timeout
        # The slot lives on the primary: every connection here asks for one.
        self._conninfo = with_liveness(on_primary(settings.database_url), self._liveness)
        self.applier = applier
        self.publisher = publisher
        self.store = store
        self.keys = keys
        self.metrics = metrics
        self.confirmed = 0
        self.pending = 0  # the server's WAL position at start: caught up once confirmed
        self.ready = False
        self._relations = RelationCache()
        self._images = RowImages()
        self.decoder = load_decoder(settings.cdc_decoder)

    async def prepare(self) -> None:
        """Create the slot if needed, take it back from our own silent walsender, and
        flush the namespace if the stream had a gap."""
        # Creating a slot waits for the transactions running on the server: a longer bound.
        async with (
            await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn,
            bounded(self._liveness * 6, "preparing the slot", conn),
        ):
            await check_wal_level(conn)
            created = await ensure_slot(conn, self.settings.cdc_slot)
            if self.previous is not None and await take_back(
                conn, self.settings.cdc_slot, self.previous
            ):
                self.metrics.takebacks += 1
                log.warning(
                    "slot taken back from this listener's silent walsender",
                    extra={"slot": self.settings.cdc_slot, "pid": self.previous.pid},
                )
            position = {"slot": self.settings.cdc_slot}
            row = await (await conn.execute(query("slot_position"), position)).fetchone()
        if row is not None and row[0] is not None:
            self.confirmed = parse_lsn(row[0])
            self.pending = parse_lsn(row[1])
        if created:
            # Changes made before the slot existed were never seen: forget the namespace.
            removed = await self.store.flush_matching(
                self.keys.namespace_pattern(), self.keys.outlives_flush
            )
            log.warning(
                "slot created, cache namespace flushed",
                extra={"slot": self.settings.cdc_slot, "keys": removed},
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Prepare the slot, then stream and apply commits until `stop` is set."""
        await self.prepare()
        name = application_name(self.settings.cdc_slot)
        stream = await ReplicationStream.connect(
            on_primary(self.settings.database_url), name, self._liveness
        )
        try:
            await stream.start(self.settings.cdc_slot, self.settings.cdc_publication)
            await self._find_walsender(name)
            log.info(
                "streaming from slot",
                extra={
                    "slot": self.settings.cdc_slot,
                    "lsn": format_lsn(self.confirmed),
                    "decoder": self.decoder.implementation,
                    **({"why": self.decoder.reason} if self.decoder.reason else {}),
                },
            )
            self._stream = stream
            self.ready = True
            self.metrics.source_started(self.pending)
            heartbeat = asyncio.create_task(self._heartbeat())
            # Completes when we must stop: every wait for data ends with it.
            self._stopping = asyncio.ensure_future(stop.wait())
            try:
                await self._consume(stop)
            finally:
                heartbeat.cancel()
                self._stopping.cancel()
        finally:
            await stream.close()

    async def _find_walsender(self, name: str) -> None:
        """Remember the server's backend for our stream, to take the slot back from it
        should the connection go silent (a replication connection cannot ask its pid)."""
        try:
            async with (
                await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn,
                bounded(self._liveness, "finding our walsender", conn),
            ):
                self.walsender = await find_walsender(conn, name)
        except (psycopg.Error, StreamSilent) as exc:
            # Without it a silent stream costs a wait for wal_sender_timeout, nothing more.
            log.warning("could not find our walsender", extra={"error": str(exc)})

    async def _heartbeat(self) -> None:
        """Write a tiny WAL record now and then. The slot's restart position only moves
        when the server decodes new WAL past it; on a very quiet database this gives it
        something to decode, so the WAL the slot holds stays small."""
        interval = self.settings.cdc_heartbeat_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                async with (
                    await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn,
                    bounded(self._liveness, "heartbeat", conn),
                ):
                    await conn.execute(query("stream_heartbeat"))
            except (psycopg.Error, StreamSilent) as exc:
                # the stream itself will tell if the server is gone
                log.warning("heartbeat failed", extra={"error": str(exc)})

    async def _consume(self, stop: asyncio.Event) -> None:
        self._batch = Batch()
        self._txn: _Transaction | None = None
        # (when, batch, repeat its actions): the position of each batch is confirmed when its
        # entry comes due, in order; one that needs no second pass only waits its turn.
        self._rechecks: deque[tuple[float, Batch, bool]] = deque()
        self._recheck_us = self.settings.cdc_recheck_delay * 1_000_000
        self._sent = -1
        self._reported = 0.0
        self._next_status = 0.0
        self._probed = 0.0  # when a reply was last requested
        self._asked: float | None = None  # the first request not answered yet
        self._inflight: asyncio.Future[None] | None = None  # a batch's round trip, running
        try:
            await self._follow(stop)
        finally:
            _forget(self._inflight)
        log.info(
            "listener stopped",
            extra={"slot": self.settings.cdc_slot, "lsn": format_lsn(self.confirmed)},
        )

    async def _follow(self, stop: asyncio.Event) -> None:
        stream = self._stream
        take = self._take
        decode = self.decoder.decode
        # Refresh mode needs whole row images: every message is decoded whole.
        quick = _never if self.settings.cdc_refresh else self._quick
        heard = False
        turn = _YIELD_EVERY
        while not stop.is_set():
            turn -= 1
            if not turn:
                # A backlog never leaves the socket empty: give the loop's other tasks (the
                # batch in flight still writing, the metrics port, the announcements) a turn.
                turn = _YIELD_EVERY
                await asyncio.sleep(0)
            data = stream.read_nowait()
            if data is None:
                if heard:
                    self.metrics.heard()  # once per burst: the clock is not free
                    heard = False
                data = await self._drained()
                if data is None:
                    continue
            heard = True
            payload = xlog_payload(data)
            if payload is None:
                frame = parse_copy_data(data)  # a keepalive, an odd view, or it raises
                if isinstance(frame, Keepalive):
                    await self._keepalive(frame)
                    continue
                payload = frame.payload
                data = memoryview(data.tobytes())  # an odd view: its send time read as bytes
            if quick(payload):
                continue
            message = decode(payload)
            if type(message) is Commit:
                await self._commit(message, xlog_send_time(data))
            else:
                take(message)
        await self._finish()

    def _take(self, message: Message) -> None:
        """A message other than a Commit: a row change joins the open transaction."""
        kind = type(message)
        if kind in _ROW_CHANGES:
            if self._txn is None:
                raise ProtocolViolation("row change outside a transaction")
            self._collect(self._txn, message)  # type: ignore[arg-type]
        elif kind is Begin:
            self._txn = _Transaction()
        elif kind is Relation:
            self._relations.remember(message)  # type: ignore[arg-type]

    def _quick(self, payload: memoryview) -> bool:
        """Whether the message was taken without decoding it whole: a Begin (its fields are
        not used; any Begin of the right length decodes), or an update of `orders` read by
        the decoder's fast path (pgoutput.pick_update: the few values the rule needs, no
        Update built) and added to the open transaction. Not in refresh mode, which needs
        whole row images."""
        tag = payload[0]
        if tag == _BEGIN and len(payload) == _BEGIN_SIZE:
            self._txn = _Transaction()
            return True
        if tag != _UPDATE or self._txn is None:
            return False
        picked = self.decoder.pick_update(payload, self._relations.update_layouts)
        if picked is None:
            return False  # decoded whole: the general path (or its error)
        txn = self._txn
        txn.changes += 1
        add_change(txn.touched, self._relations.order_update(picked))
        txn.touched.bound(self.settings.cdc_max_keys)
        return True

    async def _finish(self) -> None:
        """Stopping: a transaction cut short is dropped (the server resends it); what was
        committed is applied, rechecked after its delay, and confirmed before we close."""
        await self._apply(time.monotonic())
        if self._rechecks:
            last = max(when for when, _, _ in self._rechecks)
            await asyncio.sleep(max(0.0, last - time.monotonic()))
            await self._apply(float("inf"))
        await self._report(force=True)

    async def _drained(self) -> memoryview | None:
        """Nothing more is waiting: what arrived is sent now (a burst becomes one round
        trip), with the rechecks that are due riding along, and the position confirmed; then
        the wait for more data. The round trip runs meanwhile: the wait ends when it
        completes (None), to confirm."""
        await self._apply(time.monotonic(), overlap=True)
        await self._report()
        return await self._wait_for_data()

    async def _wait_for_data(self) -> memoryview | None:
        """Data, or None when a status report, a recheck or a request for a reply is due
        or we must stop. Raises StreamSilent when the server stayed silent too long."""
        now = time.monotonic()
        share = self._liveness * PROBE_SHARE
        if now - self.metrics.heard_at >= share:
            # Quiet, or busy elsewhere (a slow Redis round trip): what waits in the socket
            # meanwhile was heard too.
            data = self._stream.read_nowait()
            if data is not None:
                self.metrics.heard()
                return data
        self.metrics.check()
        heard_at = self.metrics.heard_at
        if self._asked is not None and heard_at >= self._asked:
            self._asked = None  # answered
        # Dead only when asked and unanswered: a loop busy elsewhere (a slow Redis) that
        # heard nothing because it asked nothing is not a silent server.
        deadline = float("inf") if self._asked is None else self._asked + self._liveness - share
        if now >= deadline:
            self.metrics.silences += 1
            raise StreamSilent(
                f"nothing from the server for {now - heard_at:.1f} s although replies were"
                " requested"
            )
        probe_at = max(heard_at, self._probed) + share
        if now >= probe_at:
            if self._asked is None:
                self._asked = now
                deadline = now + self._liveness - share
            self._probed = now
            probe_at = now + share
            await self._report(force=True, reply=True)
        wake = min(self._next_status, probe_at, deadline)
        if self._rechecks:
            wake = min(wake, self._rechecks[0][0] + _RECHECK_SLACK)
        within = max(0.0, wake - time.monotonic())
        if self._inflight is not None:
            return await self._stream.read(within, self._stopping, self._inflight)
        return await self._stream.read(within, self._stopping)

    async def _keepalive(self, frame: Keepalive) -> None:
        self.metrics.server_lsn = max(self.metrics.server_lsn, frame.end)
        if (
            self._txn is None
            and not self._batch.commits
            and not self._rechecks
            and self._inflight is None
        ):
            # Everything sent before this keepalive is applied: its end is safe.
            self.confirmed = max(self.confirmed, frame.end)
        await self._report(force=frame.reply_requested)

    async def _commit(self, message: Commit, sent_at: int) -> None:
        txn, self._txn = self._txn, None
        self.metrics.server_lsn = max(self.metrics.server_lsn, message.end_lsn)
        # Both times are the server's clock. A commit sent long after it was made is visible
        # to every new snapshot by now: its second pass would only repeat the first.
        recent = sent_at - message.commit_time < self._recheck_us
        if txn is not None:
            self.metrics.received += txn.changes
            max_keys = self.settings.cdc_max_keys
            if (
                self._batch.commits
                and len(self._batch.touched.orders) + len(txn.touched.orders) > max_keys
            ):
                # Apply what is held rather than let the merged batch cross the bound and
                # drop the whole family: the bound is for single huge transactions.
                await self._apply(time.monotonic(), overlap=True)
            self._batch.changes += txn.changes
            self._batch.add(
                txn.touched, txn.images, message.end_lsn, pg_time_to_unix(message.commit_time)
            )
            self._batch.bound(max_keys)
            self._batch.recent |= recent
        if self._batch.commits >= self.settings.cdc_batch_commits:
            await self._apply(time.monotonic(), overlap=True)

    async def _report(self, force: bool = False, reply: bool = False) -> None:
        """Confirm the position: when asked, every status interval, and soon after it
        moved, but no more often than _REPORT_GAP. `reply` asks the server to answer."""
        now = time.monotonic()
        moved = self.confirmed != self._sent
        if not (force or now >= self._next_status):
            if not moved:
                return
            if now < self._reported + _REPORT_GAP:
                self._next_status = min(self._next_status, self._reported + _REPORT_GAP)
                return
        await self._stream.send(
            standby_status(self.confirmed, self.confirmed, self.confirmed, pg_now(), reply)
        )
        self._sent = self.confirmed
        self._reported = now
        self._next_status = now + self.settings.cdc_status_interval
        self.metrics.confirmed(self.confirmed)

    async def _apply(self, now: float, *, overlap: bool = False) -> None:
        """Apply the held batch and the rechecks due by `now`, merged into as few round trips
        as the key bound allows; then move the confirmed position as far as is safe.

        With `overlap` the round trip is left running while the next changes are awaited,
        read and decoded: the next batch's waits for it, and nothing is confirmed or
        announced before it completes, so one batch at a time is in flight and commit order
        holds."""
        await self._settle()
        due: list[Batch] = []
        repeat: list[Batch] = []
        batch = self._batch
        # Without a commit to ride along with, a second pass waits out its slack first.
        cutoff = now if batch.commits else now - _RECHECK_SLACK
        while self._rechecks and self._rechecks[0][0] <= cutoff:
            _, done, again = self._rechecks.popleft()
            due.append(done)
            if again:
                repeat.append(done)
        if not due and not batch.commits:
            return
        self._batch = Batch()
        sending = self._send(batch, due, repeat)
        if overlap:
            self._inflight = asyncio.ensure_future(sending)
            # Let it plan and write its commands now: Redis then works while we decode.
            await asyncio.sleep(0)
        else:
            await sending

    async def _settle(self) -> None:
        """Wait for the batch in flight, if any (its failure is raised here)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    async def _send(self, batch: Batch, due: list[Batch], repeat: list[Batch]) -> None:
        """One batch's round trips, then its announcement and the position it makes safe."""
        sent = Applied()
        for merged in merge_batches([*repeat, batch], self.settings.cdc_max_keys):
            sent += await self.applier.apply(merged)
        batch.first_applied(time.time())
        self.metrics.batch_applied(batch.changes, batch.commits, batch.lag, sent)
        # A batch is announced when its position becomes safe to confirm: after its second
        # pass, so a page refetching on the message cannot read through the visibility gap.
        for done in due:
            self.publisher.announce(done)
        if due:
            self.confirmed = max(self.confirmed, due[-1].end_lsn)
        if not batch.commits:
            return
        again = batch.recent and self.settings.cdc_recheck_delay > 0
        if again or self._rechecks:
            # Confirmed only after its second pass, or after the earlier ones still waiting.
            delay = self.settings.cdc_recheck_delay if again else 0.0
            self._rechecks.append((time.monotonic() + delay, batch, again))
        else:
            self.publisher.announce(batch)
            self.confirmed = max(self.confirmed, batch.end_lsn)

    def _collect(self, txn: _Transaction, message: Insert | Update | Delete | Truncate) -> None:
        txn.changes += 1
        refresh = self.settings.cdc_refresh
        if refresh or not self._relations.add_order_update(txn.touched, message):
            for change in changes_of(message, self._relations):
                add_change(txn.touched, change)
                if change.table == "orders" and refresh:
                    self._remember_image(txn, message)
        txn.touched.bound(self.settings.cdc_max_keys)
        if txn.touched.all_orders:
            txn.images.clear()

    def _remember_image(
        self, txn: _Transaction, message: Insert | Update | Delete | Truncate
    ) -> None:
        if isinstance(message, Truncate) or txn.touched.all_orders:
            return
        relation = self._relations.get(message.relation_oid)
        if isinstance(message, Delete):
            for order_id in _ids(message.old, relation):
                txn.images[order_id] = None
            return
        image = self._images.order(relation, message.new)
        if image is None:
            for order_id in _ids(message.new, relation):
                txn.images[order_id] = None
            return
        txn.images[image["id"]] = image
        if isinstance(message, Update) and message.old is not None:
            for old_id in _ids(message.old, relation) - {image["id"]}:
                txn.images[old_id] = None  # the id itself changed: the old key goes


def _never(_: memoryview) -> bool:
    return False


def _forget(task: asyncio.Future[None] | None) -> None:
    """A round trip left behind by a failing or stopped stream: cancelled, its outcome
    read (the stream's own error is the one raised)."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


def _ids(row: tuple[object, ...], relation: Relation) -> set[int]:
    for column, value in zip(relation.columns, row, strict=True):
        if column.name == "id" and isinstance(value, bytes):
            return {int(value)}
    return set()
