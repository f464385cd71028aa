"""The invalidation channel of tracked near copies: Redis tells this process when a key it
read changes (server-assisted client-side caching), and a heartbeat proves that it still
does.

How it is built, per generation (one connection of each, rebuilt from scratch on any fault):

- A subscriber connection S asks its ``CLIENT ID`` and subscribes to
  ``__redis__:invalidate``.
- Only then is the tracked client made (RESP2 too: Redis formats a flush's null for the
  redirect in the tracking connection's protocol, and a RESP3 null breaks RESP2): each of
  its connections runs ``CLIENT TRACKING on REDIRECT <S's id>`` before its first command.
  Near copies are read through it (the ``read`` script): every key a read touches (value,
  fences, token) is remembered by Redis in the same command that reads it, and any later
  write of one of them by anyone (the listener's scripts, a raw ``SET``/``DEL``, expiry,
  eviction) sends its name to S. A flush sends a null message: everything is dropped.
- Every ``beat`` seconds the process runs a script on the tracked client that reads its own
  heartbeat key and writes it, which sends that key's name to S.

Why an unchecked hit is safe (the staleness bound): S receives Redis's messages in the
order Redis emitted them. A heartbeat sent at time t (this process's monotonic clock) is
written by Redis after t; when its message comes back, every message Redis emitted for a
write executed before t has already been processed here (dropping the copies it names).
So at `proven_at` = t, no copy held here is older than a write Redis executed before t, and
a copy is served without a round trip only while ``now - proven_at <= bound``: a value
Redis replaced is served for at most `bound` after the replacement, whatever happens to
the channel (a killed, silent or blackholed connection, a restarted Redis, a stalled event
loop). Any error of S or of the heartbeat ends the generation at once (nothing is served
unchecked until a heartbeat of the next one returns); a heartbeat not back within
`silent_after` ends it too.

The races of a copy's own read, and how each is closed:

- Tracking is on for a connection before it sends anything, and S was subscribed before the
  tracked client existed, so no read of generation g is untracked or reported nowhere.
- A read's reply and an invalidation of what it read travel on different sockets: the
  invalidation (of a write executed after the read) may be processed here before the reply.
  A read therefore takes a `Watch` before it is sent (the generation and the count of
  messages processed so far); its copy is marked tracked only if no message processed since
  then names one of its keys, or was a flush (`covers`). Otherwise the copy is kept
  unmarked: its next read is a checked one.
- A read goes through the tracked client, and may mark its copy, only while the channel is
  proven (a silent channel's client may be as silent: the main client answers the check
  then, and marks nothing). A copy marked under generation g is served unchecked only
  while g is the live, proven generation: one kept before a reconnect, before the first
  heartbeat of a generation came back, or through the main client (a fill), is checked on
  its next read, and that check, sent through the tracked client, marks it again.

This channel serves one Redis. Behind Sentinel both clients connect to the master Sentinel
names, and the heartbeat is a write, which a demoted master refuses. A Redis Cluster tracks
per node: api.cluster_tracking builds one of these channels per primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from mescache.errors import Retryable
from mescache.redisconn import is_cluster, make_redis
from mescache.store import RedisStore

log = logging.getLogger("api.tracking")

INVALIDATE_CHANNEL: Final = "__redis__:invalidate"
_RECENT: Final = 4096  # messages remembered for `covers`; older reads are not marked
_BEAT_TTL_MS: Final = 60_000  # the heartbeat key outlives the process by a minute at most

# KEYS = the heartbeat key; ARGV = a value, its TTL ms. The GET makes Redis track the key for
# this connection, the SET then sends its name to the redirect (one message per beat).
_BEAT = """
redis.call('GET', KEYS[1])
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""

Listener = Callable[[frozenset[str] | None], None]


class InvalidationChannel(Protocol):
    """What the near cache asks of a channel: this module's one-Redis channel, or
    api.cluster_tracking's, one channel per primary of a cluster."""

    listener: Listener | None

    @property
    def losses(self) -> dict[str, int]:
        """Generations ended, by reason ("lost", "silent")."""

    @property
    def flushes(self) -> int:
        """Flushes reported."""

    async def start(self) -> None:
        """Run the channel in the background."""

    async def close(self) -> None:
        """Stop it: copies are served checked from now on."""

    def watch(self, name: str = "") -> Watch:
        """Taken before a near read of key `name` is sent."""

    def covers(self, watch: Watch, names: tuple[str, ...]) -> bool:
        """Whether that read's answer may mark its copy tracked."""

    def proven(self, gen: int) -> bool:
        """Whether a copy marked under `gen` may be served with no round trip now."""

    @property
    def proven_now(self) -> bool:
        """Whether every part of the channel is proven now."""


class MessageLog:
    """The last `size` messages processed, numbered: whether any since a given number named
    one of some keys (a flush names them all)."""

    def __init__(self, size: int = _RECENT) -> None:
        self.seq = 0  # messages processed so far
        self._recent: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=size)

    def note(self, names: frozenset[str] | None) -> None:
        """Record an invalidation message (`names` None: a flush of everything)."""
        self.seq += 1
        self._recent.append((self.seq, names))

    def untouched_since(self, seq: int, names: tuple[str, ...]) -> bool:
        """No message after number `seq` named one of `names` (False when some of them are
        no longer remembered)."""
        if seq == self.seq:
            return True
        if not self._recent or self._recent[0][0] > seq + 1:
            return False
        return not any(
            number > seq and (changed is None or not changed.isdisjoint(names))
            for number, changed in self._recent
        )


class ChannelEnded(Retryable):
    """The subscription stopped delivering: silent, unsubscribed, or an unexpected reply
    (retryable: the channel is rebuilt, near hits are checked meanwhile)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Watch:
    """Taken before a near read is sent: the store to send it through (None: the channel is
    down, read through the main one), the generation, and the messages processed so far."""

    store: RedisStore | None
    gen: int
    seq: int


class TrackingChannel:
    """One process's invalidation channel (see the module docstring)."""

    def __init__(
        self,
        url: str,
        timeout: float,
        beat_key: str,
        *,
        bound: float,
        beat: float,
        silent_after: float | None = None,
        retry: float = 0.5,
        max_connections: int = 16,
        clock: Callable[[], float] = time.monotonic,
        generations: Iterator[int] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.beat_key = beat_key
        self.bound = bound
        self.beat = beat
        self.silent_after = silent_after if silent_after is not None else max(1.0, 4 * bound)
        self.retry = retry
        self.max_connections = max_connections
        self.clock = clock
        self.listener: Listener | None = None
        # Generation numbers; shared by the channels of a cluster's nodes (api.cluster_tracking)
        # so that a copy's generation names its channel too.
        self._generations = generations if generations is not None else itertools.count(1)
        self.gen = 0
        self.store: RedisStore | None = None  # the tracked client's, while a generation lives
        self.supported = True  # False on a cluster: never built
        self.losses: dict[str, int] = {"lost": 0, "silent": 0}
        self.flushes = 0
        self.beats = 0
        self.client_id: int | None = None  # the live subscriber's, on its Redis
        self._live = False
        self._up = True  # no outage logged yet
        self._proven_at = -math.inf
        self._beat_sent: float | None = None
        self._beat_back = asyncio.Event()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self.log = MessageLog()
        self._task: asyncio.Task[None] | None = None

    # -- what the near cache asks ---------------------------------------------------------

    def watch(self, name: str = "") -> Watch:
        """A near read (of key `name`: one channel serves every key here) goes through the
        tracked client only while the channel is proven: a silent channel's client may be as
        silent, the main one answers the check."""
        return Watch(self.store if self.proven_now else None, self.gen, self.log.seq)

    def covers(self, watch: Watch, names: tuple[str, ...]) -> bool:
        """Whether a read sent under `watch` and answered now left Redis tracking `names`
        for this live generation with no change of them processed in between."""
        if watch.store is None or not self._live or watch.gen != self.gen:
            return False
        return self.log.untouched_since(watch.seq, names)

    def proven(self, gen: int) -> bool:
        """Whether a copy marked under `gen` may be served without a round trip now."""
        return self._live and gen == self.gen and self.clock() - self._proven_at <= self.bound

    @property
    def proven_now(self) -> bool:
        """Whether the channel is proven now, for the current generation."""
        return self.proven(self.gen)

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Check that the server can track, then run the channel in the background."""
        probe = make_redis(self.url, self.timeout, 1)
        try:
            if is_cluster(probe):
                self.supported = False
                log.warning("tracked near copies need one Redis or Sentinel: checked on a cluster")
                return
        finally:
            await probe.aclose()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the channel; copies are served checked from now on."""
        await cancelled(self._task)
        self._task = None

    def beat_now(self) -> None:
        """Send the next heartbeat without waiting for the interval."""
        self._wake.set()

    async def until(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait (at most `within` s) until `predicate` holds, checked at each state change
        or message; whether it did."""
        deadline = asyncio.get_running_loop().time() + within
        while not predicate():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)
        return True

    # -- the generations ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._generation()
            except ChannelEnded as exc:
                self._lose("silent" if exc.reason == "silent" else "lost", exc)
            except Exception as exc:  # any fault: checked hits, then a new try
                self._lose("lost", exc)
            await asyncio.sleep(self.retry)

    def _lose(self, reason: str, exc: BaseException) -> None:
        self.losses[reason] += 1
        if self._up:  # once per outage, not once per attempt
            self._up = False
            log.warning(
                "near-copy invalidation channel down, near hits are checked",
                extra={"reason": reason, "error": repr(exc)},
            )
        self._poke()

    async def _generation(self) -> None:
        sub = make_redis(self.url, self.timeout, 1, resp2=True)
        tracked: Redis | None = None
        conn: AbstractConnection | None = None
        reader: asyncio.Task[None] | None = None
        beater: asyncio.Task[None] | None = None
        try:
            conn = await sub.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            await conn.send_command("CLIENT", "ID")
            client_id = int(await conn.read_response())
            self.client_id = client_id
            await conn.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
            reply = await conn.read_response()
            if not isinstance(reply, list) or reply[0] != b"subscribe":
                raise ChannelEnded(f"unexpected subscribe reply {reply!r}")
            tracked = make_redis(self.url, self.timeout, self.max_connections, resp2=True)
            tracked.connection_pool.connection_kwargs["redis_connect_func"] = _tracking_on(
                client_id
            )
            self.gen = next(self._generations)
            self.store = RedisStore(tracked)
            beat = tracked.register_script(_BEAT)
            self._live = True
            self._poke()
            loop = asyncio.get_running_loop()
            reader = loop.create_task(self._read(conn))
            beater = loop.create_task(self._beats(beat))
            done, _ = await asyncio.wait({reader, beater}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ChannelEnded("ended")
        finally:
            # First of all: nothing is served unchecked from here on.
            self._live = False
            self.store = None
            self._proven_at = -math.inf
            self._beat_sent = None
            for running in (reader, beater):
                if running is not None:
                    running.cancel()
                    await asyncio.wait([running])  # its outcome is this generation's end
                    if not running.cancelled():
                        running.exception()  # seen: both may have failed at once
            # Closing a connection Redis already dropped may fail in many ways: none of them
            # may keep the others open.
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            with contextlib.suppress(Exception):
                await sub.aclose()
            if tracked is not None:
                with contextlib.suppress(Exception):
                    await tracked.aclose()

    async def _read(self, conn: AbstractConnection) -> None:
        while True:
            message = await conn.read_response(timeout=math.inf)
            if not isinstance(message, list) or len(message) != 3:
                raise ChannelEnded(f"unexpected message {message!r}")
            if message[0] != b"message":
                raise ChannelEnded(f"subscription ended: {message[0]!r}")
            self._received(message[2])

    def _received(self, data: Any) -> None:
        names: frozenset[str] | None
        if data is None:
            names = None
            self.flushes += 1
        else:
            names = frozenset(
                (item.decode() if isinstance(item, bytes) else str(item)) for item in data
            )
        self.log.note(names)
        if names is not None and self.beat_key in names and self._beat_sent is not None:
            if not self._up:
                self._up = True
                log.info("near-copy invalidation channel proven again, near hits tracked")
            self._proven_at = self._beat_sent
            self._beat_sent = None
            self._beat_back.set()
        if self.listener is not None:
            self.listener(names)
        self._poke()

    async def _beats(self, beat: Any) -> None:
        ident = secrets.token_hex(4)
        while True:
            self._beat_back.clear()
            self._beat_sent = self.clock()
            await beat(keys=[self.beat_key], args=[ident, _BEAT_TTL_MS])
            self.beats += 1
            # asyncio.timeout, not wait_for: no task per wait, a hundred times a second.
            try:
                async with asyncio.timeout(self.silent_after):
                    await self._beat_back.wait()
            except TimeoutError:
                raise ChannelEnded("silent") from None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.beat):
                    await self._wake.wait()

    def _poke(self) -> None:
        self._progress.set()


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a channel's background task, if any, and wait until it has stopped."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _tracking_on(client_id: int) -> Callable[[AbstractConnection], Any]:
    async def connect(conn: AbstractConnection) -> None:
        await conn.on_connect()
        await conn.send_command("CLIENT", "TRACKING", "on", "REDIRECT", client_id)
        reply = await conn.read_response()
        if reply not in (b"OK", "OK"):
            raise RedisConnectionError(f"tracking refused: {reply!r}")

    return connect
