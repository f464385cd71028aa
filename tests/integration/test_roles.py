"""The least-privilege logins of mescache/sql/migrations/007_roles.sql: the API, the listener and
the writer each do their work as their own role, and are refused what is not theirs."""

from __future__ import annotations

import psycopg
import pytest
import redis.asyncio
from psycopg import errors

from api.app import create_app
from mescache.keys import KeySchema
from tests.integration.conftest import api_settings, http_client
from tests.integration.listener_fixtures import InProcessListener, eventually, listener_settings

ORDER = {"customer": "anna", "model_id": 1, "material_id": 1, "params": {"size": 17}}


def as_role(database_url: str, role: str) -> str:
    """The test database's URL with another login (the test server trusts loopback)."""
    return database_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)


async def test_the_api_serves_as_mes_api(database_url: str, redis_url: str) -> None:
    app = create_app(api_settings(as_role(database_url, "mes_api"), redis_url))
    async with app.router.lifespan_context(app), http_client(app) as http:
        placed = await http.post("/orders", json=ORDER)  # OPERATOR_API_KEY provisioned too
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]
        assert (await http.get(f"/orders/{order_id}")).status_code == 200
        moved = await http.patch(f"/orders/{order_id}", json={"status": "in_progress"})
        assert moved.status_code == 200, moved.text
        assert (await http.get("/orders/dashboard")).status_code == 200
        assert (await http.get("/models/1/price", params={"material": 1})).status_code == 200


@pytest.mark.parametrize(
    ("role", "statement"),
    [
        ("mes_api", "DELETE FROM orders"),
        ("mes_api", "UPDATE orders SET total_price = 0"),
        ("mes_api", "UPDATE models SET base_price = 0"),
        ("mes_api", "DELETE FROM api_keys"),
        ("mes_api", "SELECT * FROM write_behind_applied"),
        ("mes_api", "CREATE TABLE owned (id int)"),
        ("mes_listener", "UPDATE orders SET status = 'done'"),
        ("mes_listener", "SELECT * FROM api_keys"),
        (
            "mes_writer",
            "INSERT INTO orders (customer, model_id, material_id, quantity,"
            " total_price) VALUES ('x', 1, 1, 1, 0)",
        ),
        ("mes_writer", "UPDATE orders SET total_price = 0"),
        ("mes_writer", "SELECT * FROM api_keys"),
    ],
)
def test_each_role_is_refused_what_is_not_its_own(
    database_url: str, role: str, statement: str
) -> None:
    with (
        psycopg.connect(as_role(database_url, role)) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


async def test_the_listener_follows_changes_as_mes_listener(
    database_url: str, redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    settings = listener_settings(as_role(database_url, "mes_listener"), redis_url)
    listener = InProcessListener(settings)
    await listener.start()
    try:
        key = KeySchema().order(1).name
        await redis_client.set(key, b"cached")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE orders SET quantity = quantity + 1 WHERE id = 1")

        async def gone() -> bool:
            return not await redis_client.exists(key)

        await eventually(gone, what="order 1 invalidated")
    finally:
        await listener.close()
    with psycopg.connect(as_role(database_url, "mes_listener"), autocommit=True) as conn:
        conn.execute("SELECT pg_logical_emit_message(false, 'orders_cache.heartbeat', '')")
        conn.execute("SELECT pg_drop_replication_slot(%s)", [settings.cdc_slot])


def test_the_writer_applies_a_status_as_mes_writer(database_url: str) -> None:
    with psycopg.connect(as_role(database_url, "mes_writer")) as conn:
        row = conn.execute(
            "UPDATE orders SET status = 'cancelled' WHERE id = 1 AND status <> 'done' RETURNING id"
        ).fetchone()
        conn.execute(
            "INSERT INTO write_behind_applied (entry_id, order_id, status)"
            " VALUES ('1-0', 1, 'cancelled')"
        )
        conn.execute("SELECT pg_try_advisory_lock(hashtext('orders-writer:x'))")
        conn.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots")
    assert row is None or row[0] == 1
