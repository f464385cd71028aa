"""`orders-api keys`: keys made, listed and revoked from the command line work (and stop
working) against the API; bad usage exits 2 and an unreachable database 1, with a message."""

from __future__ import annotations

import subprocess
import sys

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from api import apikeys
from tests.integration.conftest import http_client


def orders_api(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.main", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _place_for(client: httpx.AsyncClient, customer: str) -> int:
    resp = await client.post(
        "/orders", json={"customer": customer, "model_id": 1, "material_id": 1}
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


async def test_create_list_revoke(
    app: FastAPI, client: httpx.AsyncClient, database_url: str
) -> None:
    env = {"DATABASE_URL": database_url}
    made = orders_api("keys", "create", "--role", "client", "--customer", "Anna K.", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("mes_")
    assert len(key) >= 40
    assert "only time the key is shown" in made.stderr
    assert "'Anna K.'" in made.stderr
    operator = orders_api("keys", "create", "--role", "operator", "--label", "front desk", env=env)
    assert operator.returncode == 0, operator.stderr

    order_id = await _place_for(client, "Anna K.")
    async with http_client(app, key) as anna:
        assert (await anna.get(f"/orders/{order_id}/status")).status_code == 200
        assert (await anna.get("/orders/dashboard")).status_code == 403
    async with http_client(app, operator.stdout.strip()) as desk:
        assert (await desk.get("/orders/dashboard")).status_code == 200

    listing = orders_api("keys", "list", env=env)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["id", "prefix", "role", "customer", "label", "created", "revoked"]
    assert len(lines) == 4  # the app's OPERATOR_API_KEY, and the two made here
    assert any(key[:12] in line and "Anna K." in line for line in lines)
    assert any("front desk" in line and "operator" in line for line in lines)
    assert key not in listing.stdout
    assert operator.stdout.strip() not in listing.stdout

    revoked = orders_api("keys", "revoke", key[:12], env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith("revoked key ")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        assert await apikeys.verify(conn, apikeys.key_hash(key)) is None
    again = orders_api("keys", "revoke", key[:12], env=env)
    assert again.returncode == 0
    assert "already revoked" in again.stdout
    assert len(orders_api("keys", "list", env=env).stdout.splitlines()) == 3
    everything = orders_api("keys", "list", "--all", env=env).stdout.splitlines()
    assert len(everything) == 4
    assert any("Anna K." in line and line.split()[-1] != "-" for line in everything[1:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "create", "--role", "client"), "needs --customer"),
        (("keys", "create", "--role", "operator", "--customer", "X"), "drop --customer"),
        (("keys", "create", "--role", "admin"), "invalid choice"),
        (("keys", "create"), "--role"),
        (("keys",), "KEYS_COMMAND"),
        (("keys", "revoke"), "ID_OR_PREFIX"),
        (("keys", "revoke", "mes_nosuchkey"), "no API key with id or prefix"),
        (("keys", "revoke", "987654"), "no API key with id or prefix"),
        (("fly",), "invalid choice"),
    ],
)
def test_bad_usage_exits_2_with_a_message(
    database_url: str, args: tuple[str, ...], message: str
) -> None:
    done = orders_api(*args, env={"DATABASE_URL": database_url})
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_missing_settings_exit_2_and_an_unreachable_database_1() -> None:
    missing = orders_api("keys", "list", env={})
    assert missing.returncode == 2
    assert "DATABASE_URL" in missing.stderr
    down = orders_api(
        "keys",
        "create",
        "--role",
        "operator",
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"},
    )
    assert down.returncode == 1
    assert down.stderr.startswith("orders-api keys create: ")
    assert len(down.stderr.strip().splitlines()) == 1
    assert "Traceback" not in down.stderr
    assert down.stdout == ""


def test_a_prefix_shared_by_two_keys_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for digest in (b"a" * 32, b"b" * 32):
            conn.execute(
                "INSERT INTO api_keys (key_hash, prefix, role) VALUES (%s, 'mes_same', 'operator')",
                [digest],
            )
    done = orders_api("keys", "revoke", "mes_same", env={"DATABASE_URL": database_url})
    assert done.returncode == 2
    assert "give the id" in done.stderr


def test_serving_still_needs_its_settings() -> None:
    done = orders_api(env={"DATABASE_URL": "x", "OPERATOR_API_KEY": "short"})
    assert done.returncode == 2
    assert "REDIS_URL" in done.stderr
    assert "OPERATOR_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr
