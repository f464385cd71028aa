"""Figure 5, memory: the listener's peak RSS through one transaction of many row changes,
and the API's RSS over a long read load (the catch-up's peak is in figure 4)."""

from __future__ import annotations

import threading
import time

import psycopg

from bench.load import wrk
from bench.report import Section, Target
from bench.stack import (
    Stack,
    api_env,
    children,
    current_lsn,
    get,
    listener_env,
    rss_mb,
    start_api,
    start_listener,
    stop,
    wait_confirmed,
    wait_slot_active,
)
from mescache.settings import CacheSettings


def one_big_transaction(stack: Stack, rows: int) -> tuple[float, float, float]:
    """Idle RSS, peak RSS (MB) and seconds for a transaction of `rows` row changes."""
    listener = start_listener(listener_env(stack))
    try:
        wait_slot_active(stack.database_url, "orders_cache", listener)
        time.sleep(1)
        idle = rss_mb(listener.pid)
        began = time.perf_counter()
        with psycopg.connect(stack.database_url) as conn:  # one transaction
            for _ in range(rows // 100_000):
                conn.execute("UPDATE orders SET quantity = quantity + 1")
        end = current_lsn(stack.database_url)
        finished = wait_confirmed(stack.database_url, "orders_cache", end)
        return idle, rss_mb(listener.pid, "VmHWM"), finished - began
    finally:
        stop(listener)


def api_under_load(stack: Stack, seconds: float) -> list[tuple[float, float]]:
    """(elapsed s, summed RSS of the API's workers in MB), sampled through a read load."""
    api, port = start_api(api_env(stack))
    samples: list[tuple[float, float]] = []
    try:
        get(port, "/orders/dashboard")
        workers = children(api.pid) or [api.pid]
        done = threading.Event()

        def sample() -> None:
            began = time.perf_counter()
            while not done.wait(seconds / 30):
                total = sum(rss_mb(pid) for pid in workers)
                samples.append((time.perf_counter() - began, total))

        sampler = threading.Thread(target=sample)
        sampler.start()
        wrk(port, "/orders/dashboard", seconds, 32)
        done.set()
        sampler.join()
    finally:
        stop(api)
    return samples


def run(stack: Stack, quick: bool) -> Section:
    rows, seconds = (200_000, 20.0) if quick else (1_000_000, 300.0)
    idle, peak, took = one_big_transaction(stack, rows)
    samples = api_under_load(stack, seconds)
    # Warm once the dashboard key has expired and been filled again (every kind of
    # allocation the load makes has then happened once); a short run waits half of it.
    warm_after = min(CacheSettings.model_fields["ttl_dashboard"].default, seconds / 2)
    warm_at, warm = next((t, rss) for t, rss in samples if t > warm_after)
    last = samples[-1][1]
    highest = max(s[1] for s in samples)
    growth = last - warm
    table = [
        ["measure", "value"],
        ["listener RSS idle", f"{idle:.0f} MB"],
        [f"listener peak RSS through one {rows:,}-row transaction", f"{peak:.0f} MB"],
        ["time to confirm that transaction (from its first statement)", f"{took:.1f} s"],
        [f"API workers' RSS after warm-up ({warm_at:.0f} s of {seconds:.0f} s)", f"{warm:.0f} MB"],
        ["API workers' RSS at the end / highest", f"{last:.0f} MB / {highest:.0f} MB"],
    ]
    method = f"""
Method: a fresh listener (default settings) follows the stream while one transaction
updates every order {rows // 100_000} times ({rows:,} row changes); its peak RSS is `VmHWM`
after the slot confirmed the transaction (past the key bound the listener drops the
`order:*` family instead of holding every id). Then one API server (a worker per core)
serves `GET /orders/dashboard` hits to wrk (32 connections) for {seconds:.0f} s while the
workers' RSS (`VmRSS`, summed) is sampled 30 times; "flat" means it grows by less than
5 MB from the first sample after warm-up to the end. Warm-up lasts until the dashboard
key has expired once (its TTL, 60 s) and been filled again, so that every kind of
allocation the load makes has happened once (a short run: half the run).
"""
    return Section(
        title="5. Memory",
        module="bench/memory.py",
        method=method,
        tables=[table],
        targets=[
            Target(
                f"listener peak RSS through a {rows:,}-row transaction < 150 MB",
                f"{peak:.0f} MB",
                peak < 150,
            ),
            Target(
                "API RSS flat over the read load (growth < 5 MB after warm-up)",
                f"{growth:+.1f} MB",
                growth < 5,
            ),
        ],
    )
