"""The listener's cost: commit-to-invalidation latency and catch-up throughput.

Latency: a key is cached, a transaction commits an UPDATE of its row, and a tight loop
watches Redis until the key is gone. Throughput: 100,000 row updates in 1,000 committed
transactions written while the listener is stopped, timed from its start until the
slot's confirmed position passes the last one (so the Redis work of every commit is
done). Memory: the listener's peak RSS.
Run: .venv/bin/python -m bench.listener_bench
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import psycopg
import redis

from bench.stack import machine, private_stack, spawn

LATENCY_SAMPLES = 300


def wait_slot_active(url: str, slot: str) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    raise RuntimeError("listener did not start")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(url: str, r: redis.Redis) -> list[float]:
    samples = []
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(LATENCY_SAMPLES):
            order_id = 1 + i
            key = f"order:{order_id}"
            r.set(key, b"cached")
            started = time.perf_counter()
            conn.execute("UPDATE orders SET quantity = quantity + 1 WHERE id = %s", [order_id])
            while r.exists(key):
                pass
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def write_backlog(url: str) -> str:
    """100,000 row updates in 1,000 commits, written while no listener runs."""
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(1, 100_001, 100):
            conn.execute(
                "UPDATE orders SET quantity = quantity + 1 WHERE id BETWEEN %s AND %s",
                [start, start + 99],
            )
        return str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])  # type: ignore[index]


def catch_up(url: str, slot: str, end: str, started: float) -> float:
    """Rows/s from `started` until the slot's confirmed position passes `end`."""
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                " WHERE slot_name = %s",
                [end, slot],
            ).fetchone()
            if row and row[0]:
                return 100_000 / (time.perf_counter() - started)
            time.sleep(0.005)


def main() -> int:
    with private_stack() as stack:
        slot = "orders_cache"
        env = {
            "DATABASE_URL": stack.database_url,
            "REDIS_URL": stack.redis_url,
            "CDC_RECHECK_DELAY": "0",
            "CDC_STATUS_INTERVAL": "0.05",
        }
        spawned = time.perf_counter()
        listener = spawn("cdc_listener.cli", env)
        try:
            wait_slot_active(stack.database_url, slot)
            startup = time.perf_counter() - spawned
            r = redis.Redis.from_url(stack.redis_url)
            lat = latency(stack.database_url, r)
            listener.terminate()
            listener.wait(20)
            end = write_backlog(stack.database_url)
            started = time.perf_counter()  # includes the listener's start-up
            listener = spawn("cdc_listener.cli", env)
            rate = catch_up(stack.database_url, slot, end, started)
            q = statistics.quantiles(lat, n=100)
            print(f"machine: {machine()}\n")
            print("| measure | value |")
            print("|---|---|")
            print(f"| commit → key invalidated, p50 ({LATENCY_SAMPLES} commits) | {q[49]:.2f} ms |")
            print(f"| commit → key invalidated, p99 | {q[98]:.2f} ms |")
            print(f"| catch-up: 100,000 row updates in 1,000 commits | {rate:,.0f} rows/s |")
            print(f"| of which start-up (spawn to slot active, measured alone) | {startup:.2f} s |")
            steady = 100_000 / (100_000 / rate - startup)
            print(f"| catch-up without start-up | {steady:,.0f} rows/s |")
            print(f"| listener peak RSS | {peak_rss_mb(listener.pid):.0f} MB |")
        finally:
            listener.terminate()
            listener.wait(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
