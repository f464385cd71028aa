"""Shared set-up of the benchmarks: a private stack with the demo data, the processes under
test, and what the report says about the machine.

PostgreSQL runs with pg_stat_statements, so a benchmark can count the dashboard queries
that reached the database; Redis publishes key events, so a benchmark can see the moment a
key is deleted without polling it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fastapi
import psycopg
import redis
import uvicorn

from devtools.demo import load_demo_data
from devtools.devstack import PostgresServer, RedisServer, ensure_binaries, free_port
from mescache.migrate import apply_migrations

# The throwaway stack's operator key, provisioned through OPERATOR_API_KEY as in production;
# the hit, the bare route and the database path all pay for checking it.
OPERATOR_KEY = "mes_bench-operator-key-of-a-throwaway-stack"
AUTH_HEADER = f"Authorization: Bearer {OPERATOR_KEY}"


@dataclass
class Stack:
    database_url: str
    redis_url: str
    pg: PostgresServer
    redis: RedisServer

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)


@contextmanager
def private_stack() -> Iterator[Stack]:
    """Fresh PostgreSQL and Redis with the 100,000-order demo data, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="mescache-bench-"))
    workdir.chmod(0o755)  # the postgres user must reach its data directory
    bindir, redis_bin = ensure_binaries()
    pg = PostgresServer(workdir / "pg", bindir)
    rs = RedisServer(workdir / "redis", redis_bin)
    pg.init()
    with open(pg.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
    pg.start()
    rs.start()
    try:
        url = pg.create_database("bench")
        apply_migrations(url)
        load_demo_data(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("VACUUM ANALYZE orders")
        client = redis.Redis.from_url(rs.url())
        client.config_set("notify-keyspace-events", "Egx")
        client.close()
        yield Stack(url, rs.url(), pg, rs)
    finally:
        rs.stop()
        pg.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A Python module of ours in a child process, its output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def api_env(stack: Stack, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": stack.database_url,
        "REDIS_URL": redis_url or stack.redis_url,
        "API_WORKERS": str(os.cpu_count() or 1),
        "OPERATOR_API_KEY": OPERATOR_KEY,
        **extra,
    }


def start_server(
    module: list[str], env: dict[str, str], path: str, what: str
) -> tuple[subprocess.Popen[bytes], int]:
    """A server process on a free port (`PORT`), once it answers `path`."""
    port = free_port()
    proc = spawn(module, {**env, "PORT": str(port)})
    deadline = time.monotonic() + 180  # a loaded machine can take a minute to start it
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{what} did not start")


def start_api(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """`orders-api` as in production (uvicorn, uvloop, httptools, a worker per core)."""
    return start_server(["api.main"], env, "/healthz", "orders-api")


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  # our own http URL
        return response.status, dict(response.headers), response.read()


def listener_env(stack: Stack, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url, **extra}


def start_listener(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return spawn(["cdc_listener.cli", "run"], env)


def wait_slot_active(url: str, slot: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
            ).fetchone()
            if row and row[0]:
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.02)
    raise RuntimeError(f"no consumer became active on slot {slot}")


def wait_confirmed(url: str, slot: str, lsn: str, timeout: float = 1800) -> float:
    """Poll until the slot's confirmed position reaches `lsn`; the perf_counter then."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                " WHERE slot_name = %s",
                [lsn, slot],
            ).fetchone()
            if row and row[0]:
                return time.perf_counter()
            time.sleep(0.005)
    raise RuntimeError(f"slot {slot} did not reach {lsn}")


def current_lsn(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def create_slot(url: str, slot: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])


def drop_slot(url: str, slot: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            [slot],
        )


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident set (VmRSS) or its peak (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError:
        return "missing"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def machine(stack: Stack) -> dict[str, str]:
    """What the report says about the machine and the software, read at run time."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        "unknown CPU",
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    client = stack.client()
    redis_version = str(client.info("server")["redis_version"])
    client.close()
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "CPU": f"{os.cpu_count()} cores, {model}",
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "PostgreSQL": str(row[0]) if row else "unknown",
        "Redis": redis_version,
        "FastAPI / uvicorn": f"{fastapi.__version__} / {uvicorn.__version__}",
        "wrk": _version(["wrk", "-v"]),
        "load average at start": " ".join(load),
    }
