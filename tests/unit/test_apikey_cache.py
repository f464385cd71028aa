"""The memory of verified keys: answers kept for the TTL, bad keys remembered too, one
query per key at a time, a bounded number of queries at once, bounded memory."""

from __future__ import annotations

import asyncio

import pytest

from api.apikey_cache import KeyVerifier
from api.apikeys import Principal

ANNA = Principal(1, "mes_annakey1", "client", "Anna K.")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Table:
    """An in-memory api_keys: digest -> principal, counting lookups."""

    def __init__(self, keys: dict[bytes, Principal]) -> None:
        self.keys = keys
        self.calls: list[bytes] = []
        self.running = 0
        self.most_at_once = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self, digest: bytes) -> Principal | None:
        self.calls.append(digest)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            return self.keys.get(digest)
        finally:
            self.running -= 1


async def test_a_verified_key_is_remembered_for_the_ttl_then_asked_again() -> None:
    clock, table = Clock(), Table({b"anna": ANNA})
    verifier = KeyVerifier(table, ttl=10, clock=clock)
    assert await verifier.verify(b"anna") == ANNA
    clock.now += 9.9
    assert await verifier.verify(b"anna") == ANNA
    assert table.calls == [b"anna"]
    del table.keys[b"anna"]  # revoked
    assert await verifier.verify(b"anna") == ANNA  # still remembered
    clock.now += 0.2
    assert await verifier.verify(b"anna") is None
    assert table.calls == [b"anna", b"anna"]


async def test_a_bad_key_is_remembered_too() -> None:
    clock, table = Clock(), Table({})
    verifier = KeyVerifier(table, ttl=10, clock=clock)
    for _ in range(5):
        assert await verifier.verify(b"guess") is None
    assert table.calls == [b"guess"]


async def test_concurrent_requests_with_one_key_share_one_lookup() -> None:
    table = Table({b"anna": ANNA})
    table.gate.clear()
    verifier = KeyVerifier(table, ttl=10, clock=Clock())
    waiting = [asyncio.create_task(verifier.verify(b"anna")) for _ in range(50)]
    await asyncio.sleep(0)
    table.gate.set()
    assert await asyncio.gather(*waiting) == [ANNA] * 50
    assert table.calls == [b"anna"]


async def test_distinct_bad_keys_query_at_most_max_lookups_at_once() -> None:
    table = Table({})
    table.gate.clear()
    verifier = KeyVerifier(table, ttl=10, max_lookups=2, clock=Clock())
    guesses = [asyncio.create_task(verifier.verify(bytes([i]))) for i in range(40)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert table.running == 2
    table.gate.set()
    assert await asyncio.gather(*guesses) == [None] * 40
    assert table.most_at_once == 2


async def test_memory_is_bounded_least_recently_used_out_first() -> None:
    table = Table({b"anna": ANNA})
    verifier = KeyVerifier(table, ttl=10, max_entries=3, clock=Clock())
    await verifier.verify(b"anna")
    for i in range(10):
        await verifier.verify(bytes([i]))
        await verifier.verify(b"anna")  # used all along: stays
    assert table.calls.count(b"anna") == 1
    await verifier.verify(bytes([0]))  # pushed out long ago: asked again
    assert table.calls.count(bytes([0])) == 2


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_remembered() -> None:
    table = Table({b"anna": ANNA})
    table.fail = OSError("database down")
    table.gate.clear()
    verifier = KeyVerifier(table, ttl=10, clock=Clock())
    waiting = [asyncio.create_task(verifier.verify(b"anna")) for _ in range(3)]
    await asyncio.sleep(0)
    table.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    table.fail = None
    assert await verifier.verify(b"anna") == ANNA
    assert len(table.calls) == 2


async def test_a_cancelled_leader_does_not_fail_its_followers() -> None:
    table = Table({b"anna": ANNA})
    table.gate.clear()
    verifier = KeyVerifier(table, ttl=10, clock=Clock())
    leader = asyncio.create_task(verifier.verify(b"anna"))
    await asyncio.sleep(0)
    follower = asyncio.create_task(verifier.verify(b"anna"))
    await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    table.gate.set()
    assert await follower == ANNA


async def test_ttl_zero_remembers_nothing() -> None:
    table = Table({b"anna": ANNA})
    verifier = KeyVerifier(table, ttl=0, clock=Clock())
    await verifier.verify(b"anna")
    await verifier.verify(b"anna")
    assert len(table.calls) == 2
