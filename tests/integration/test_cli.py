"""The listener's CLI: clear messages and exit codes."""

from __future__ import annotations

import subprocess
import sys

import psycopg


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc_listener.cli", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_settings_exit_2_with_a_message() -> None:
    done = cli("status", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr
    bad_mode = cli("run", env={"DATABASE_URL": "x", "REDIS_URL": "y", "CDC_MODE": "poll"})
    assert bad_mode.returncode == 2
    assert "CDC_MODE" in bad_mode.stderr


def test_an_unreachable_server_exits_1_with_a_message() -> None:
    env = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    for command in ("status", "run"):
        done = cli(command, env=env)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(f"cdc-listener {command}: ")
        assert "Traceback" not in done.stderr


def test_status_and_drop_slot(database_url: str, redis_url: str) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "CDC_SLOT": "cli_slot"}
    assert "not created yet" in cli("status", env=env).stdout
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('cli_slot', 'pgoutput')")
    status = cli("status", env=env)
    assert status.returncode == 0
    assert "slot: cli_slot" in status.stdout
    assert "retained wal bytes:" in status.stdout
    assert "confirmed lsn:" in status.stdout
    dropped = cli("drop-slot", env=env)
    assert dropped.stdout.strip() == "slot cli_slot: dropped"
    assert cli("drop-slot", env=env).stdout.strip() == "slot cli_slot: did not exist"


def test_notify_status_reports_the_backlog(database_url: str, redis_url: str) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "CDC_MODE": "notify"}
    assert cli("install-notify", env=env).returncode == 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE orders SET quantity = quantity + 1 WHERE id <= 3")
    assert "outbox backlog: 3" in cli("status", env=env).stdout
