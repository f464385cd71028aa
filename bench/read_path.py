"""Figure 1, the read path: the dashboard on a hit, against two references serving the
same bytes from memory (a bare FastAPI app and a frameworkless ASGI app, bench/
reference_apps.py) and against the database path.

Every server runs as in production (uvicorn, uvloop, httptools) with the same number of
workers: once with one worker, once with a worker per core, each a table of its own. The
database path is an API whose Redis is unreachable, so its breaker sends every read to
PostgreSQL (the cache bypassed, same code and settings otherwise); it is measured with a
worker per core only. wrk drives the paths in turn, round after round, so they all see the
same spells of machine noise. Ratios are given of the medians of the rounds (the targets)
and of the best runs (noise, and uvicorn's uneven sharing of connections between workers,
only ever slow a run down, so a best run is a path's capacity).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.load import WrkResult, wrk
from bench.report import Section, Target, ms, rate, ratio
from bench.stack import Stack, api_env, get, start_api, start_server, stop
from devtools.devstack import free_port

CONNECTIONS = 32
DASHBOARD = "/orders/dashboard"
LABELS = {
    "hit": "`GET /orders/dashboard`, hit (checked, the default)",
    "tracked": "`GET /orders/dashboard`, hit (`NEAR_CACHE=tracked`)",
    "fastapi": "bare FastAPI app (bytes in memory)",
    "asgi": "frameworkless ASGI app (bytes in memory)",
    "database": "`GET /orders/dashboard`, cache bypassed (PostgreSQL)",
}


@dataclass
class Table:
    """One worker count's runs, by path."""

    workers: int
    runs: dict[str, list[WrkResult]]

    def median(self, name: str, attr: str = "rps") -> float:
        return statistics.median(getattr(r, attr) for r in self.runs[name])

    def best(self, name: str) -> float:
        return max(r.rps for r in self.runs[name])

    def ratios(self, name: str, of: str = "hit") -> tuple[float, float]:
        """`of` ÷ `name`: of the medians, and of the best runs."""
        return self.median(of) / self.median(name), self.best(of) / self.best(name)


def start_reference(
    kind: str, body_file: Path, workers: int
) -> tuple[subprocess.Popen[bytes], int]:
    """A reference app of bench/reference_apps.py, once it answers."""
    env = {"BENCH_BODY_FILE": str(body_file), "WORKERS": str(workers)}
    return start_server(["bench.reference_apps", kind], env, "/", f"reference app {kind}")


def _measure(
    stack: Stack,
    workers: int,
    rounds: int,
    seconds: int,
    *,
    with_database: bool,
    body_file: Path,
) -> tuple[Table, int]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports: dict[str, int] = {}
        for name, mode in (("hit", "checked"), ("tracked", "tracked")):
            api, ports[name] = start_api(api_env(stack, API_WORKERS=str(workers), NEAR_CACHE=mode))
            procs.append(api)
            for _ in range(3):  # the first read fills the key; later ones must hit
                status, headers, body = get(ports[name], DASHBOARD)
            if status != 200 or headers.get("x-cache") != "hit":
                raise RuntimeError(f"{name}: {status} X-Cache={headers.get('x-cache')}")
        body_file.write_bytes(body)
        for kind in ("fastapi", "asgi"):
            proc, ports[kind] = start_reference(kind, body_file, workers)
            procs.append(proc)
        if with_database:
            unreachable = f"redis://127.0.0.1:{free_port()}/0"
            direct, ports["database"] = start_api(
                api_env(stack, redis_url=unreachable, API_WORKERS=str(workers))
            )
            procs.append(direct)
        for name, port in ports.items():
            status, headers, other = get(port, DASHBOARD)
            if status != 200 or other != body:
                raise RuntimeError(f"{name}: {status}, not the hit's {len(body):,} bytes")
            if name == "database" and headers.get("x-cache") != "miss":
                raise RuntimeError(f"database path: X-Cache={headers.get('x-cache')}")
        runs: dict[str, list[WrkResult]] = {name: [] for name in ports}
        for _ in range(rounds):
            for name, port in ports.items():
                runs[name].append(wrk(port, DASHBOARD, seconds, CONNECTIONS))
    finally:
        for proc in procs:
            stop(proc)
    return Table(workers, runs), len(body)


def run(stack: Stack, quick: bool) -> Section:
    rounds, seconds = (2, 3) if quick else (5, 6)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        body_file = Path(tmp) / "dashboard.json"
        one, size = _measure(stack, 1, rounds, seconds, with_database=False, body_file=body_file)
        many, _ = _measure(stack, cores, rounds, seconds, with_database=True, body_file=body_file)
    return _section(one, many, rounds, seconds, size)


def _rows(table: Table) -> list[list[str]]:
    rows = [
        [
            f"path ({table.workers} worker{'s' if table.workers > 1 else ''} each)",
            "req/s median / best",
            "p50 ms",
            "p99 ms",
            "÷ bare FastAPI, median / best",
            "÷ frameworkless ASGI, median / best",
        ]
    ]
    for name, runs in table.runs.items():
        against = [table.ratios(ref, of=name) for ref in ("fastapi", "asgi")]
        rows.append(
            [
                LABELS[name],
                f"{rate(table.median(name))} / {rate(max(r.rps for r in runs))}",
                ms(table.median(name, "p50_ms")),
                ms(table.median(name, "p99_ms")),
                *(f"{ratio(mid)} / {ratio(top)}" for mid, top in against),
            ]
        )
    return rows


def _section(one: Table, many: Table, rounds: int, seconds: int, size: int) -> Section:
    errors = sum(r.errors for t in (one, many) for rs in t.runs.values() for r in rs)
    method = f"""
Method: the API under test (`orders-api`, as in production: uvicorn with uvloop and
httptools, its default settings) serves `GET /orders/dashboard` from the cache, once with
checked near hits (the default: a token round trip to Redis per hit) and once, a second
API beside it, with tracked ones (`NEAR_CACHE=tracked`: no round trip). Beside them
run two references that serve the same {size:,} bytes (checked before the runs) from
memory, with the same uvicorn and the same number of workers (`bench/reference_apps.py`):
a bare FastAPI app with one route, and a frameworkless ASGI app that writes the response
straight to uvicorn; neither checks a key nor asks Redis. With a worker per core a second
API whose `REDIS_URL` points at a closed port serves every read from PostgreSQL (its
circuit breaker bypasses the cache; same code and settings otherwise). wrk (one thread,
{CONNECTIONS} connections, the operator's bearer token) drives each path for {seconds} s,
the paths in turn, {rounds} rounds; then the servers are restarted with the other worker
count. The targets compare medians of the rounds; the best runs are given beside them
(noise on this machine only ever slows a run down, and so does uvicorn's way of sharing
connections between workers, decided anew in every run). Latencies are medians of the
rounds. Non-2xx answers or socket errors in all runs: {errors}.
"""
    db_mid, _ = many.ratios("database")
    why = {
        "hit": "A checked hit waits for one Redis round trip (the near copy's token check) "
        "that the references never make; on two shared cores that Redis competes with wrk "
        "and the workers for the CPU.",
        "tracked": "A tracked hit makes no round trip, but still authenticates the key and "
        "passes the API's middleware, and each worker's invalidation channel and heartbeat "
        "take CPU the references do not spend.",
    }
    targets = []
    for name, label in (("hit", "checked hit"), ("tracked", "tracked hit")):
        fastapi_mid, _ = many.ratios("fastapi", of=name)
        asgi_mid, _ = many.ratios("asgi", of=name)
        targets += [
            Target(
                f"{label} ≥ 0.95 x bare FastAPI app, {many.workers} workers (median req/s)",
                ratio(fastapi_mid),
                fastapi_mid >= 0.95,
                why[name],
            ),
            Target(
                f"{label} ≥ 0.6 x frameworkless ASGI app, {many.workers} workers (median req/s)",
                ratio(asgi_mid),
                asgi_mid >= 0.6,
                why[name],
            ),
        ]
    return Section(
        title="1. Read path",
        module="bench/read_path.py",
        method=method,
        tables=[_rows(one), _rows(many)],
        targets=[
            *targets,
            Target("hit ≥ 10 x database path (median req/s)", ratio(db_mid), db_mid >= 10),
        ],
    )
