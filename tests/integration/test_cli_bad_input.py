"""Bad options and settings given to the command-line tools: one line on stderr, exit 2,
never a traceback nor a password (an unreachable server stays exit 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Servers

PASSWORD = "s3cr3t-pw"


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--rate", "nan"),
        ("--rate", "inf"),
        ("--rate", "-1"),
        ("--timeout", "1e308"),
        ("--timeout", "nan"),
        ("--grace", "-5"),
        ("--grace", "inf"),
        ("--sample", "0"),
        ("--sample", "many"),
    ],
)
def test_check_refuses_numbers_out_of_range(
    database_url: str, redis_url: str, option: str, value: str
) -> None:
    sample = ["--sample", "1"] if option in ("--rate", "--timeout") else []
    done = run(
        "cdc_listener.cli",
        "check",
        *sample,
        option,
        value,
        env={"DATABASE_URL": database_url, "REDIS_URL": redis_url},
    )
    assert_one_line_exit_2(done, option)


MALFORMED_REDIS_URLS = [
    "localhost:6379",
    f"http://:{PASSWORD}@127.0.0.1:6379/0",
    f"redis://:{PASSWORD}@127.0.0.1:99999/0",
    f"redis://:{PASSWORD}@127.0.0.1:port/0",
    f"redis://:{PASSWORD}@[::1/0",
    f"redis://:{PASSWORD}@127.0.0.1:6379/0?socket_timeout=soon",
]


@pytest.mark.parametrize("redis_url", MALFORMED_REDIS_URLS)
@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("cdc_listener.cli", ("check",)),
        ("cdc_listener.cli", ("warm",)),
        ("writer.cli", ("status",)),
        ("api.main", ("serve",)),
    ],
)
def test_a_malformed_redis_url_is_one_line_exit_2(
    database_url: str, redis_url: str, module: str, args: tuple[str, ...]
) -> None:
    done = run(module, *args, env={"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    assert_one_line_exit_2(done, "REDIS_URL", "not a Redis URL")


def test_serve_on_a_database_without_the_schema_exits_2(servers: Servers, redis_url: str) -> None:
    empty = servers.pg.create_database("no_schema")
    done = run(
        "api.main",
        "serve",
        env={"DATABASE_URL": empty, "REDIS_URL": redis_url, "OPERATOR_API_KEY": "k" * 40},
    )
    assert_one_line_exit_2(done, "migrations", "orders")


def test_keys_create_with_a_label_too_long_exits_2(database_url: str) -> None:
    done = run(
        "api.main",
        "keys",
        "create",
        "--role",
        "operator",
        "--label",
        "x" * 201,
        env={"DATABASE_URL": database_url},
    )
    assert_one_line_exit_2(done, "at most 200 characters")


def test_keys_create_at_the_longest_label_works(database_url: str) -> None:
    done = run(
        "api.main",
        "keys",
        "create",
        "--role",
        "operator",
        "--label",
        "x" * 200,
        env={"DATABASE_URL": database_url},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mes_")


@pytest.mark.parametrize("slot", ["Orders-Cache", "orders cache; drop", "x" * 64, ""])
@pytest.mark.parametrize("command", ["run", "status"])
def test_the_writer_refuses_an_invalid_slot(redis_url: str, slot: str, command: str) -> None:
    done = run(
        "writer.cli",
        command,
        env={
            "DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
            "REDIS_URL": redis_url,
            "CDC_SLOT": slot,
        },
    )
    assert_one_line_exit_2(done, "CDC_SLOT")


def test_an_unreachable_redis_is_still_exit_1(database_url: str) -> None:
    done = run(
        "cdc_listener.cli",
        "check",
        env={"DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
