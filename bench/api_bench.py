"""Reads served from Redis versus the same reads from PostgreSQL, side by side.

Two API processes run at once on the same private stack: one with Redis, one whose Redis
is unreachable (its breaker sends every read to PostgreSQL). wrk drives each in turn,
round after round, so both see the same machine noise; the table reports the median
round. Run: .venv/bin/python -m bench.api_bench  (needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys

import psycopg

from bench.stack import AUTH_HEADER, machine, private_stack, start_api
from mescache.devstack import free_port

ROUNDS = 5
SECONDS = 4
PATHS = ["/orders/dashboard", "/orders/12345", "/orders?status=done&limit=50"]


def wrk(port: int, path: str) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c16",
            f"-d{SECONDS}s",
            "--latency",
            "-H",
            AUTH_HEADER,
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return rps, pct("50"), pct("99")


def db_xacts(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    if shutil.which("wrk") is None:
        print("api_bench: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 1
    with private_stack() as stack:
        cached, cached_port = start_api(stack.database_url, stack.redis_url)
        direct, direct_port = start_api(stack.database_url, f"redis://127.0.0.1:{free_port()}/0")
        try:
            print(f"machine: {machine()}")
            print(
                f"wrk: 1 thread, 16 connections, {SECONDS}s rounds, {ROUNDS} rounds each, "
                "alternating; median round\n"
            )
            print("| path | from | req/s | p50 ms | p99 ms | db transactions / 1k req |")
            print("|---|---|---|---|---|---|")
            for path in PATHS:
                results: dict[str, list[tuple[float, float, float, float]]] = {
                    "redis": [],
                    "postgresql": [],
                }
                for _ in range(ROUNDS):
                    for name, port in (("redis", cached_port), ("postgresql", direct_port)):
                        before = db_xacts(stack.database_url)
                        rps, p50, p99 = wrk(port, path)
                        xacts = db_xacts(stack.database_url) - before
                        results[name].append((rps, p50, p99, 1000 * xacts / (rps * SECONDS)))
                for name, rows in results.items():
                    rps = statistics.median(r[0] for r in rows)
                    print(
                        f"| `{path}` | {name} | {rps:,.0f} | "
                        f"{statistics.median(r[1] for r in rows):.2f} | "
                        f"{statistics.median(r[2] for r in rows):.2f} | "
                        f"{statistics.median(r[3] for r in rows):.0f} |"
                    )
                ratio = statistics.median(
                    a[0] / b[0]
                    for a, b in zip(results["redis"], results["postgresql"], strict=True)
                )
                print(
                    f"| `{path}` | ratio redis/postgresql (per round, median) | "
                    f"{ratio:.1f}x | | | |"
                )
        finally:
            for proc in (cached, direct):
                proc.terminate()
                proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
