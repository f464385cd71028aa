"""Figure 1, the read path: the dashboard on a hit, against the database path and against
a bare endpoint of the same server that returns the same bytes from memory.

Two API servers run side by side, each as in production (uvicorn, uvloop, httptools, a
worker per core): the one under test, with the bench-only bare route mounted, and one
whose Redis is unreachable, so its breaker sends every read to PostgreSQL (the cache
bypassed, same code and settings otherwise). wrk drives the three paths in turn, round
after round, so the three see the same spells of machine noise; each path's best run is
its capacity (noise, and uvicorn's uneven sharing of connections between workers, only
ever slow a run down), and the ratios compare those.
"""

from __future__ import annotations

import statistics

from bench.load import WrkResult, wrk
from bench.report import Section, Target, ms, rate, ratio
from bench.stack import Stack, api_env, get, start_api, stop
from devtools.devstack import free_port

CONNECTIONS = 32
PATHS = {
    "hit": "/orders/dashboard",
    "bare": "/bench/dashboard-bare",
    "database": "/orders/dashboard",
}


def run(stack: Stack, quick: bool) -> Section:
    rounds, seconds = (2, 3) if quick else (5, 6)
    cached, cached_port = start_api(api_env(stack, API_BENCH_ROUTES="true"))
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    direct, direct_port = start_api(api_env(stack, redis_url=unreachable))
    try:
        ports = {"hit": cached_port, "bare": cached_port, "database": direct_port}
        bodies = {}
        for name, path in PATHS.items():
            for _ in range(3):  # the first read fills the key; later ones must hit
                status, headers, body = get(ports[name], path)
            bodies[name] = body
            expected = {"hit": "hit", "bare": "hit", "database": "miss"}[name]
            if status != 200 or headers.get("x-cache") != expected:
                raise RuntimeError(f"{name}: {status} X-Cache={headers.get('x-cache')}")
        if len(set(bodies.values())) != 1:
            raise RuntimeError("the three paths do not return the same bytes")
        runs: dict[str, list[WrkResult]] = {name: [] for name in PATHS}
        for _ in range(rounds):
            for name, path in PATHS.items():
                runs[name].append(wrk(ports[name], path, seconds, CONNECTIONS))
    finally:
        stop(cached)
        stop(direct)
    return _section(runs, rounds, seconds, len(bodies["hit"]))


def _section(runs: dict[str, list[WrkResult]], rounds: int, seconds: int, size: int) -> Section:
    def median(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    def best(name: str) -> float:
        return max(r.rps for r in runs[name])

    vs_bare, vs_db = best("hit") / best("bare"), best("hit") / best("database")
    errors = sum(r.errors for rs in runs.values() for r in rs)
    table = [["path", "req/s best / median", "p50 ms", "p99 ms", "hit ÷ path (best req/s)"]]
    for name, label in (
        ("hit", "`GET /orders/dashboard`, hit (Redis)"),
        ("bare", "`GET /bench/dashboard-bare` (bytes in memory)"),
        ("database", "`GET /orders/dashboard`, cache bypassed (PostgreSQL)"),
    ):
        r = {"hit": "1", "bare": ratio(vs_bare), "database": ratio(vs_db)}[name]
        table.append(
            [
                label,
                f"{rate(best(name))} / {rate(median(name, 'rps'))}",
                ms(median(name, "p50_ms")),
                ms(median(name, "p99_ms")),
                r if name != "hit" else "",
            ]
        )
    method = f"""
Method: two `orders-api` servers run side by side as in production (uvicorn with uvloop and
httptools, one worker per core): the server under test, started with `API_BENCH_ROUTES=true`,
which mounts `GET /bench/dashboard-bare` returning the dashboard bytes it read once at
start-up, through the same dependencies as the real route; and a second one whose
`REDIS_URL` points at a closed port, so its circuit breaker serves every read from
PostgreSQL (the cache bypassed; same code and settings otherwise). All three paths return
the same {size:,} bytes (987 orders; checked before the runs). wrk (one thread,
{CONNECTIONS} connections, the operator's bearer token) drives each path for {seconds} s,
the three in turn, {rounds} rounds. Each ratio compares the paths' best runs: noise on this
machine only ever slows a run down, and so does uvicorn's way of sharing connections
between workers, which is decided anew in every run (one worker may accept all 32 while
the other idles; seen here as a third of the CPU idle and a third fewer requests, on either
path). Latencies are medians of the rounds. Non-2xx answers or socket errors in all runs:
{errors}.
"""
    bare_why = (
        "The body does not cross Redis on a hit (each API process keeps a near copy of "
        "large values), but a hit is served only after a fence check sent after it arrived: "
        "concurrent hits share checks, yet each check is a round trip to a Redis process "
        "that competes with wrk and the workers for two cores, which the bare route never "
        "waits for. Serving the copy unchecked would break the invalidation contract."
    )
    return Section(
        title="1. Read path",
        module="bench/read_path.py",
        method=method,
        tables=[table],
        targets=[
            Target("hit ≥ 0.8 x bare (req/s)", ratio(vs_bare), vs_bare >= 0.8, bare_why),
            Target("hit ≥ 10 x database path (req/s)", ratio(vs_db), vs_db >= 10),
        ],
    )
