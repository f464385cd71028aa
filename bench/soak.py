"""`make soak`: the whole stack under load while faults hit it in turn.

Private PostgreSQL and Redis (as `make run` starts them), the API as a real uvicorn
process, the listener as a process this module supervises and restarts like systemd would
(Restart=always, RestartSec=1). Concurrent API readers, API writers and raw-SQL writers
run throughout (bench.soak_load). The faults, in turn: kill -9 of the listener, a Redis
restart (empty), a PostgreSQL restart, the slot dropped under the listener (its walsender
terminated, the slot dropped: the listener must recreate it and flush the namespace), and
the silent ones, through fault proxies (devtools.faultproxy) between the processes and the
servers: the listener's replication stream black-holed (its flows stay dead, as when a
firewall forgets them: the listener must notice and take its slot back), Redis black-holed
for the API and the listener, and PostgreSQL black-holed for the API (each for `hold`
seconds, every connection silent, new ones too, then answering again).

With `--cluster` Redis is a local Redis Cluster of 3 masters and 3 replicas instead
(bench.soak_redis): its faults are a ``CLUSTER FAILOVER FORCE`` of the master holding the
dashboard's slot and a kill -9 of another master (healed once the stack has recovered);
a single Redis restart and Redis black-holed do not apply there and are skipped, saying so.

After each fault the stack must recover by itself: recovery is the first moment a change
committed in PostgreSQL is seen invalidated in Redis end to end (the checker's probe) and
the API answers a read, counted from the fault (from its end, for those held). Load then
runs on for `dwell` seconds and the checker runs with the load still on. At the end, after
a quiet period, the checker must find 0 stale keys and every acknowledged write must be in
PostgreSQL. Exit 0 only then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis
from redis.exceptions import RedisClusterException

from bench.soak_load import Load, lost_writes
from bench.soak_redis import ClusterRedis, SingleRedis, SoakRedis
from cdc_listener.check import Checker
from cdc_listener.lag_probe import Prober
from devtools.demo import load_demo_data
from devtools.devstack import PostgresServer, ensure_binaries, free_port
from devtools.faultproxy import FaultProxy
from mescache.db import make_pool
from mescache.keys import KeySchema
from mescache.migrate import apply_migrations
from mescache.redisconn import make_redis
from mescache.settings import CacheSettings

TOKEN = "soak-operator-key-0123456789abcdef0123456789"  # noqa: S105  # a throwaway stack's key
SLOT = "orders_cache"
PG_HELD = "postgresql black-holed for the api"


def fault_plan(rs: SoakRedis) -> tuple[list[str], frozenset[str]]:
    """The faults in turn, and those held for `hold` seconds and then lifted (recovery
    counts from the lift)."""
    plan = [
        "kill -9 listener",
        *rs.restarts,
        "restart postgresql",
        "drop the slot",
        "replication stream black-holed",
        *rs.silent,
        PG_HELD,
    ]
    return plan, frozenset({*rs.silent, PG_HELD})


@dataclass
class FaultResult:
    fault: str
    recovered_s: float | None
    client_errors: int
    requests: int
    stale: int


@dataclass
class SoakReport:
    results: list[FaultResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    listener_restarts: int = 0
    final_stale: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    writes_acked: int = 0

    @property
    def passed(self) -> bool:
        recovered = all(r.recovered_s is not None for r in self.results)
        return recovered and not self.final_stale and not self.lost

    def summary(self) -> str:
        lines = [
            "| fault | recovered in | client errors / requests | stale keys (under load) |",
            "|---|---|---|---|",
        ]
        for r in self.results:
            took = "never" if r.recovered_s is None else f"{r.recovered_s:.1f} s"
            lines.append(f"| {r.fault} | {took} | {r.client_errors} / {r.requests} | {r.stale} |")
        lines += [
            "",
            *[f"skipped: {fault}: {why}" for fault, why in self.skipped.items()],
            f"listener restarts by the supervisor: {self.listener_restarts}",
            f"acknowledged writes checked: {self.writes_acked}; lost: {len(self.lost)}",
            f"stale keys after the quiet period: {len(self.final_stale)}",
            *[f"  STALE {s}" for s in self.final_stale],
            *[f"  LOST {s}" for s in self.lost],
            "PASS" if self.passed else "FAIL",
        ]
        return "\n".join(lines)


class Supervisor:
    """Keeps one listener process running, restarting it a second after it exits."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = -1
        self._stop = asyncio.Event()

    def _spawn(self) -> None:
        self.restarts += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc_listener.cli", "run"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def run(self) -> None:
        self._spawn()
        while not self._stop.is_set():
            await asyncio.sleep(0.2)
            if self.proc is not None and self.proc.poll() is not None:
                await asyncio.sleep(1.0)  # RestartSec
                self._spawn()

    def kill9(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
            if self.proc.poll() is None:
                self.proc.kill()


class Soak:
    def __init__(
        self,
        workdir: Path,
        orders: int,
        dwell: float,
        quiet: float,
        liveness: float,
        *,
        cluster: bool = False,
    ) -> None:
        self.workdir, self.orders, self.dwell, self.quiet = workdir, orders, dwell, quiet
        self.liveness = liveness
        self.rs: SoakRedis = ClusterRedis(workdir) if cluster else SingleRedis(workdir)
        self.hold = max(2.0, min(dwell / 4, 10.0))
        self.keys = KeySchema()

    async def run(self) -> SoakReport:
        self.pg = pg = _start_postgres(self.workdir)
        api: subprocess.Popen[bytes] | None = None
        supervisor: Supervisor | None = None
        # Each process reaches the servers through proxies of its own, so a fault can hit
        # one process's flows alone; the checker, the prober and the load's raw SQL do not.
        self.listener_pg = FaultProxy("127.0.0.1", pg.port)
        self.api_pg = FaultProxy("127.0.0.1", pg.port)
        proxies = (self.listener_pg, self.api_pg)
        try:
            await self.rs.start()
            for proxy in proxies:
                await proxy.start()
            self.url = pg.create_database("soak")
            apply_migrations(self.url)
            load_demo_data(self.url, orders=self.orders, models=24)
            common = {
                **os.environ,
                "REDIS_URL": self.rs.process_url,
                # The load counts a status change as acknowledged on a 200, and a cluster
                # refuses write-behind anyway.
                "WRITE_BEHIND": "false",
                "OPERATOR_API_KEY": TOKEN,
                "CDC_SLOT": SLOT,
                "CDC_LIVENESS_TIMEOUT": str(self.liveness),
            }
            port = free_port()
            api = _spawn_api(
                {**common, "DATABASE_URL": self.api_pg.url_for(self.url), "PORT": str(port)}
            )
            self.base_url = f"http://127.0.0.1:{port}"
            supervisor = Supervisor({**common, "DATABASE_URL": self.listener_pg.url_for(self.url)})
            return await self._soak(supervisor)
        finally:
            if supervisor is not None:
                supervisor.close()
            if api is not None:
                api.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    api.wait(15)
            for proxy in proxies:
                await proxy.close()
            await self.rs.close()
            pg.stop("immediate")

    async def _soak(self, supervisor: Supervisor) -> SoakReport:
        plan, held = fault_plan(self.rs)
        report = SoakReport(skipped=dict(self.rs.skipped))
        for fault, why in report.skipped.items():
            print(f"soak: skipped fault {fault!r}: {why}", file=sys.stderr, flush=True)
        supervised = asyncio.create_task(supervisor.run())
        with psycopg.connect(self.url) as conn:
            rows = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id LIMIT 200")]
        load = Load(self.base_url, self.url, TOKEN, rows)
        if await self._recovery(time.monotonic() + 60) is None:
            raise RuntimeError("the stack did not start")
        clients = asyncio.create_task(load.run())
        await asyncio.sleep(self.dwell)
        for fault in plan:
            load.phase = fault
            started = time.monotonic()
            await self._inject(fault, supervisor)
            if fault in held:
                await asyncio.sleep(self.hold)
                self._lift(fault)
                started = time.monotonic()
            recovered = await self._recovery(started + 90)
            await self.rs.after_recovery(fault)
            await asyncio.sleep(self.dwell)
            stale = await self._check(grace=3.0)
            report.results.append(
                FaultResult(
                    fault,
                    None if recovered is None else recovered - started,
                    load.errors[fault],
                    load.ok[fault] + load.errors[fault],
                    len(stale),
                )
            )
            print(report.results[-1], file=sys.stderr, flush=True)
        load.stop.set()
        await clients
        await asyncio.sleep(self.quiet)
        report.final_stale = await self._check(grace=3.0)
        report.lost = lost_writes(load)
        report.writes_acked = len(load.api_orders) + sum(
            log.acked is not None for log in load.sql_quantities.values()
        )
        report.listener_restarts = supervisor.restarts
        supervised.cancel()
        return report

    async def _inject(self, fault: str, supervisor: Supervisor) -> None:
        if fault == "kill -9 listener":
            supervisor.kill9()
        elif fault == "restart postgresql":
            await asyncio.to_thread(self._restart_postgres)
        elif fault == "drop the slot":
            await asyncio.to_thread(self._drop_slot)
        elif fault == "replication stream black-holed":
            # The listener's flows open now (its stream) stay dead; new ones pass.
            self.listener_pg.black_hole_existing()
        elif fault == PG_HELD:
            self.api_pg.black_hole()
        else:
            await self.rs.inject(fault)

    def _lift(self, fault: str) -> None:
        """New flows pass again; the black-holed ones stay dead until their owner gives
        them up (as after a firewall that forgot them)."""
        if fault == PG_HELD:
            self.api_pg.heal()
        else:
            self.rs.lift(fault)

    def _restart_postgres(self) -> None:
        self.pg.stop("fast")
        self.pg.start()

    def _drop_slot(self) -> None:
        """Terminate the listener's walsender and drop its slot before it takes it back."""
        deadline = time.monotonic() + 30
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            while time.monotonic() < deadline:
                conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                    " WHERE slot_name = %s AND active_pid IS NOT NULL",
                    [SLOT],
                )
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
                    return
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.05)
        raise RuntimeError("could not drop the slot")

    async def _recovery(self, deadline: float) -> float | None:
        """When an end-to-end invalidation and an API read both work again."""
        async with (
            make_redis(self.rs.url, 2.0, 8) as r,
            httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2) as http,
        ):
            prober = Prober(self.url, r, self.keys)
            while time.monotonic() < deadline:
                with contextlib.suppress(
                    psycopg.Error, redis.RedisError, RedisClusterException, httpx.HTTPError
                ):
                    sampled = await prober.sample(1, rate=1.0, wait_for=1.0, settle=0.5)
                    read = await http.get(f"{self.base_url}/orders/dashboard")
                    if not sampled.missed and read.status_code == 200:
                        return time.monotonic()
                await asyncio.sleep(0.2)
        return None

    async def _check(self, grace: float) -> list[str]:
        settings = CacheSettings(database_url=self.url, redis_url=self.rs.url)
        pool = make_pool(self.url, 1, 4, "soak-check")
        await pool.open(wait=True, timeout=30)
        try:
            # Past its connection bound a cluster client fails instead of waiting: room
            # for the checker's concurrent calls.
            async with make_redis(self.rs.url, 10.0, 32) as r:
                report = await Checker(r, pool, self.keys, settings).run(grace)
        finally:
            await pool.close()
        return [f"{s.name}: {s.diff}" for s in report.stale]


def _start_postgres(workdir: Path) -> PostgresServer:
    bindir, _ = ensure_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the postgres user must reach its data directory
    pg = PostgresServer(workdir / "pg", bindir)
    pg.init()
    pg.start()
    return pg


def _spawn_api(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The API as a real uvicorn process, as `make run` starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "api.main"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_soak(
    orders: int, dwell: float, quiet: float, liveness: float = 10.0, *, cluster: bool = False
) -> SoakReport:
    """`liveness`: the listener's CDC_LIVENESS_TIMEOUT (the short soak takes less);
    `cluster`: Redis is a local Redis Cluster instead of one server."""
    workdir = Path(tempfile.mkdtemp(prefix="mescache-soak-"))
    try:
        return asyncio.run(Soak(workdir, orders, dwell, quiet, liveness, cluster=cluster).run())
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dwell", type=float, default=40.0, help="seconds of load before and after each fault"
    )
    parser.add_argument("--orders", type=int, default=20_000, help="demo orders to load")
    parser.add_argument("--quiet", type=float, default=3.0, help="quiet period at the end, s")
    parser.add_argument(
        "--liveness", type=float, default=10.0, help="the listener's CDC_LIVENESS_TIMEOUT, s"
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="Redis is a local Redis Cluster (3 masters, 3 replicas) instead of one server",
    )
    args = parser.parse_args(argv)
    report = run_soak(args.orders, args.dwell, args.quiet, args.liveness, cluster=args.cluster)
    print(report.summary())
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
