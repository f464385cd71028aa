"""A stateful property test of the store's real scripts on the real Redis.

Hypothesis drives random interleavings of fill steps (begin, the SELECT of a version,
finish), commits, the listener's invalidations and refreshes, evictions of any key the
store writes, flushes and Redis restarts, against a model of what PostgreSQL holds. A
cached value names the versions of the rows it was computed from. The property: once the
listener has applied a change, no older value is stored or served, whatever vanished.

`STORE_MODEL_EXAMPLES` sets how many runs (`make test` a few dozen, `make soak` more).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
import redis.asyncio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from mescache.keys import CacheKey, KeySchema
from mescache.store import Commands, FillTicket, RedisStore, lsn_version

KEYS = KeySchema()
T = TypeVar("T")

# Each cached key and the rows (sources) it is computed from: one order (its own fence),
# a status page (its family's fence), a price (three families).
ORDER, PAGE, PRICE = KEYS.order(1), KEYS.status_page("new", None, 50), KEYS.price(5, 2, "size=17")
SOURCES: dict[str, tuple[str, ...]] = {
    ORDER.name: ("order",),
    PAGE.name: ("status",),
    PRICE.name: ("model", "material", "rules"),
}
CACHED = (ORDER, PAGE, PRICE)
# What the listener invalidates when a source changes: a key, or a family.
FAMILY_OF = {
    "status": KEYS.status_family("new"),
    "model": KEYS.price_family_of_model(5),
    "material": KEYS.price_family_of_material(2, 5),
    "rules": KEYS.all_prices(5),
}
SOURCE_NAMES = ("order", *sorted(FAMILY_OF))
NAMES_OF = {
    k.name: sorted({k.name, k.lease, *k.fences, *k.tags, *([k.token] if k.token else [])})
    for k in CACHED
}
NAMES_OF[ORDER.name].append(f"{ORDER.name}#version")


def encode(versions: dict[str, int]) -> bytes:
    return ",".join(f"{s}={v}" for s, v in sorted(versions.items())).encode()


def decode(value: bytes) -> dict[str, int]:
    return {s: int(v) for s, v in (part.split("=") for part in value.decode().split(","))}


@dataclass
class Fill:
    key: CacheKey
    ticket: FillTicket
    holder: str
    read: dict[str, int] | None = None


@dataclass
class Model:
    """What PostgreSQL holds (each source's version) and what the listener has applied."""

    committed: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("order", "status", "model", "material", "rules"), 0)
    )
    applied: dict[str, int] = field(default_factory=dict)

    def check(self, key: CacheKey, value: bytes | None, how: str) -> None:
        if value is None:
            return
        versions = decode(value)
        for source in SOURCES[key.name]:
            assert versions[source] >= self.applied.get(source, 0), (
                f"{how} {key.name} computed from {source} v{versions[source]}, "
                f"after the listener applied v{self.applied[source]}"
            )


class StoreMachine(RuleBasedStateMachine):
    """Steps of readers, the listener and a hostile Redis, in any order."""

    client: redis.asyncio.Redis
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.store = RedisStore(self.client)
        self.model = Model()
        self.lsn = 0x100
        self.run(self.client.flushdb())

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)

    fills = Bundle("fills")

    @rule(target=fills, key=st.sampled_from(CACHED))
    def begin(self, key: CacheKey) -> Fill | None:
        """A reader misses: begin_fill, then its SELECT reads what is committed now."""
        holder = secrets.token_hex(4)
        ticket = self.run(self.store.begin_fill(key, 2.0, holder))
        if ticket.value is not None:
            self.model.check(key, ticket.value, "begin_fill served")
            return None
        read = {s: self.model.committed[s] for s in SOURCES[key.name]}
        return Fill(key, ticket, holder, read)

    @rule(fill=consumes(fills))
    def finish(self, fill: Fill | None) -> None:
        """The fill tries to store what its SELECT read (only the lease holder does)."""
        if fill is not None and fill.ticket.leased:
            assert fill.read is not None
            self.run(
                self.store.finish_fill(
                    fill.key, encode(fill.read), 60, fill.ticket.fence, fill.holder
                )
            )

    @rule(source=st.sampled_from(SOURCE_NAMES))
    def commit(self, source: str) -> None:
        """A writer commits; the listener has not applied it yet."""
        self.model.committed[source] += 1

    @rule(source=st.sampled_from(SOURCE_NAMES), refresh=st.booleans(), commit=st.booleans())
    def apply(self, source: str, refresh: bool, commit: bool) -> None:
        """The listener applies every change committed so far to `source` (after one more
        commit, if `commit`: the usual case of a change applied at once)."""
        if commit:
            self.model.committed[source] += 1
        store, version = self.store, self.model.committed[source]
        self.lsn += 1

        def queue(cmds: Commands) -> None:
            if source == "order" and refresh:
                body = encode({"order": version})
                store.queue_refresh(cmds, ORDER, body, 60, lsn_version(self.lsn))
            elif source == "order":
                store.queue_invalidate(cmds, ORDER)
            else:
                family = FAMILY_OF[source]
                store.queue_invalidate_family(cmds, family, KEYS.family_fence(family))

        self.run(store.send(queue))
        self.model.applied[source] = version

    @rule(key=st.sampled_from(CACHED), data=st.data())
    def evict(self, key: CacheKey, data: st.DataObject) -> None:
        """Redis evicts one of the names the store writes for `key`."""
        self.run(self.client.delete(data.draw(st.sampled_from(NAMES_OF[key.name]))))

    @rule()
    def flush(self) -> None:
        """The listener lost its slot: it flushes, then knows every change so far."""
        self.run(self.store.flush_matching(KEYS.namespace_pattern()))
        self.model.applied = dict(self.model.committed)

    @rule()
    def restart(self) -> None:
        """Redis restarted without persistence (and forgot its scripts)."""
        self.run(self.client.flushdb())
        self.run(self.client.script_flush())

    @invariant()
    def nothing_older_is_served(self) -> None:
        for key in CACHED:
            self.model.check(key, self.run(self.store.get(key)), "served")


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_no_older_value_is_stored_or_served_after_an_invalidation(redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    client = redis.asyncio.Redis.from_url(redis_url)
    StoreMachine.client, StoreMachine.loop = client, loop
    try:
        run_state_machine_as_test(
            StoreMachine,
            settings=settings(
                max_examples=int(os.environ.get("STORE_MODEL_EXAMPLES", "40")),
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                derandomize=True,
            ),
        )
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
