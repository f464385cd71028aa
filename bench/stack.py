"""Shared set-up of the benchmarks: a private stack with the demo data, and processes."""

from __future__ import annotations

import os
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

from mescache.demo import load_demo_data
from mescache.devstack import PostgresServer, RedisServer, free_port, start_servers
from mescache.migrate import apply_migrations


@dataclass
class Stack:
    database_url: str
    redis_url: str
    pg: PostgresServer
    redis: RedisServer


@contextmanager
def private_stack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="mescache-bench-"))
    pg, redis = start_servers(workdir)
    try:
        url = pg.create_database("bench")
        apply_migrations(url)
        load_demo_data(url)
        yield Stack(url, redis.url(), pg, redis)
    finally:
        redis.stop()
        pg.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)


def spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {**os.environ, **env}
    return subprocess.Popen(
        [sys.executable, "-m", module, *(["run"] if module == "cdc_listener.cli" else [])],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# The throwaway stack's operator key: provisioned through OPERATOR_API_KEY like in production.
OPERATOR_KEY = "mes_bench-operator-key-of-a-throwaway-stack"
AUTH_HEADER = f"Authorization: Bearer {OPERATOR_KEY}"


def start_api(database_url: str, redis_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = spawn(
        "api.main",
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PORT": str(port),
            "OPERATOR_API_KEY": OPERATOR_KEY,
        },
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("api did not start")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"
