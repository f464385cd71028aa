"""Both processes as a user runs them: JSON logs parse line by line and carry the stable
keys, and a password in DATABASE_URL never reaches a log line or the CLI's output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from devtools.devstack import free_port
from tests.integration.conftest import OPERATOR_KEY
from tests.integration.listener_fixtures import eventually, listener_settings
from tests.integration.test_cli import cli
from tests.integration.test_listener import dba, drop_slot

SECRET = "Sup3r-s3cret-pw"


def with_password(url: str) -> str:
    """The same server and database; the test servers trust local users, so the password
    is accepted and ignored, but it is there for every message to leak."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


def start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "TTL_"))}
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", module, *(["run"] if module.endswith("cli") else [])],
            env={**base, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def json_lines(log: Path) -> list[dict[str, object]]:
    text = log.read_text()
    assert SECRET not in text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_listener_json_logs_carry_the_keys_and_no_password(
    database_url: str, redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    settings = listener_settings(database_url, redis_url)
    port = free_port()
    env = {
        "DATABASE_URL": with_password(database_url),
        "REDIS_URL": redis_url,
        "CDC_SLOT": settings.cdc_slot,
        "CDC_RECHECK_DELAY": "0.05",
        "METRICS_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    log = tmp_path / "listener.log"
    proc = start("cdc_listener.cli", env, log)
    processes.append(proc)
    await eventually(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), "listener ready")
    dba(database_url, "UPDATE orders SET status = 'cancelled' WHERE id = 1")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            [settings.cdc_slot],
        )
    await eventually(
        lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), "ready after the reconnect"
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    drop_slot(database_url, settings.cdc_slot)

    lines = json_lines(log)
    events = {str(line["event"]): line for line in lines}
    for name in ("streaming from slot", "listener caught up", "listener stopped"):
        assert events[name]["slot"] == settings.cdc_slot
        assert "/" in str(events[name]["lsn"])
    failed = events["source failed, reconnecting"]
    assert failed["level"] == "warning"
    assert failed["slot"] == settings.cdc_slot
    assert failed["error"]
    assert all({"time", "level", "logger", "event"} <= set(line) for line in lines)


async def test_api_json_logs_and_access_log_carry_no_password(
    database_url: str, redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": with_password(database_url),
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "API_ACCESS_LOG": "true",
        "OPERATOR_API_KEY": OPERATOR_KEY,
    }
    log = tmp_path / "api.log"
    proc = start("api.main", env, log)
    processes.append(proc)
    await eventually(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), "api ready")
    auth = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as http:
        assert (await http.get("/orders/1")).status_code == 200
        assert "orders_api_cache_misses_total 1.0" in (await http.get("/metrics")).text
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.wait(20) in (0, -signal.SIGTERM)

    lines = json_lines(log)
    assert OPERATOR_KEY not in log.read_text()
    assert any("GET /orders/1" in str(line["event"]) for line in lines), lines
    assert all({"time", "level", "logger", "event"} <= set(line) for line in lines)


def test_cli_output_never_shows_the_password(database_url: str, redis_url: str) -> None:
    base = {"REDIS_URL": redis_url, "CDC_SLOT": "secret_slot"}
    unreachable = f"postgresql://postgres:{SECRET}@127.0.0.1:1/none?connect_timeout=2"
    cases = {
        "reachable": (with_password(database_url), 0),
        "unreachable": (unreachable, 1),
        "bad port": (f"host=127.0.0.1 port=abc user=postgres password={SECRET}", 1),
        "malformed URL": (f"postgresql://postgres:{SECRET}@127.0.0.1/db?nope=1", 2),
        "not a connection string": (f"host=127.0.0.1 password={SECRET} broken", 2),
        "the password alone": (SECRET, 2),
    }
    for what, (url, code) in cases.items():
        for args in (["status"], ["status", "--json"], ["run"]):
            if args == ["run"] and code == 0:
                continue  # a running daemon is the listener test's part
            done = cli(*args, env={**base, "DATABASE_URL": url})
            assert done.returncode == code, (what, args, done.stderr)
            assert SECRET not in done.stdout + done.stderr, (what, args)
            assert "Traceback" not in done.stderr


def test_status_json_has_stable_fields(database_url: str, redis_url: str) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "CDC_SLOT": "json_slot"}
    missing = json.loads(cli("status", "--json", env=env).stdout)
    assert missing == {"mode": "logical", "slot": "json_slot", "exists": False, "standbys": []}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('json_slot', 'pgoutput')")
    try:
        report = json.loads(cli("status", "--json", env=env).stdout)
        assert report["exists"] is True
        assert report["active"] is False
        assert report["active_pid"] is None
        assert isinstance(report["retained_wal_bytes"], int)
        assert isinstance(report["lag_bytes"], int)
        assert "/" in report["confirmed_lsn"]
        assert "/" in report["current_lsn"]
        assert report["wal_status"] == "reserved"
    finally:
        drop_slot(database_url, "json_slot")

    notify = {**env, "CDC_MODE": "notify"}
    assert cli("install-notify", env=notify).returncode == 0
    dba(database_url, "UPDATE orders SET quantity = quantity + 1 WHERE id <= 2")
    report = json.loads(cli("status", "--json", env=notify).stdout)
    assert report["mode"] == "notify"
    assert report["outbox_backlog"] == 2
    assert report["oldest_pending"] is not None
