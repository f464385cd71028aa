"""The soak's clients: API readers, API writers and raw-SQL writers, each recording what
it saw, and the final proof that no acknowledged write was lost.

Each writer owns its rows, so the last acknowledged write of a row is what PostgreSQL must
hold at the end, unless a later write whose answer was lost (a fault) also landed: both
are accepted, nothing else is.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg

from mescache.orders import STATUSES

MOVES = {"new": "in_progress", "in_progress": "done"}


@dataclass
class RowLog:
    """Writes to one row: the last acknowledged value and the attempts after it."""

    acked: object = None
    pending: list[object] = field(default_factory=list)

    def attempt(self, value: object) -> None:
        self.pending.append(value)

    def acknowledged(self, value: object) -> None:
        self.acked, self.pending = value, []

    def accepts(self, final: object) -> bool:
        return final == self.acked or final in self.pending


@dataclass
class Load:
    """Concurrent clients until `stop`; counts per phase (the fault in progress)."""

    base_url: str
    database_url: str
    token: str
    sql_rows: list[int]
    phase: str = "warm-up"
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ok: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    api_orders: dict[int, RowLog] = field(default_factory=dict)  # status of placed orders
    sql_quantities: dict[int, RowLog] = field(default_factory=dict)
    placed_unknown: int = 0  # POSTs whose answer was lost: an order may or may not exist

    def _count(self, good: bool) -> None:
        (self.ok if good else self.errors)[self.phase] += 1

    async def run(self, readers: int = 4) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=5) as http:
            await asyncio.gather(
                *(self._reader(http) for _ in range(readers)),
                self._api_writer(http),
                self._sql_writer(),
            )

    async def _reader(self, http: httpx.AsyncClient) -> None:
        rng = random.Random()
        while not self.stop.is_set():
            path = rng.choice(
                [
                    "/orders/dashboard",
                    "/orders/new",
                    f"/orders?status={rng.choice(STATUSES)}&limit=20",
                    f"/orders/{rng.choice(self.sql_rows)}",
                    f"/orders/{rng.choice(list(self.api_orders) or self.sql_rows)}",
                ]
            )
            try:
                self._count((await http.get(path)).status_code < 500)
            except httpx.HTTPError:
                self._count(False)
                await asyncio.sleep(0.05)

    async def _api_writer(self, http: httpx.AsyncClient) -> None:
        rng = random.Random()
        while not self.stop.is_set():
            await asyncio.sleep(0.02)
            movable = [i for i, log in self.api_orders.items() if log.acked in MOVES]
            try:
                if movable and rng.random() < 0.6:
                    order_id = rng.choice(movable)
                    log = self.api_orders[order_id]
                    target = MOVES[str(log.acked)]
                    log.attempt(target)
                    resp = await http.patch(f"/orders/{order_id}", json={"status": target})
                    if resp.status_code == 200:
                        log.acknowledged(target)
                else:
                    self.placed_unknown += 1
                    resp = await http.post(
                        "/orders",
                        json={"customer": "Soak test", "model_id": 1, "material_id": 1},
                    )
                    if resp.status_code == 201:
                        self.placed_unknown -= 1
                        self.api_orders[resp.json()["id"]] = RowLog(acked="new")
                self._count(resp.status_code < 500)
            except httpx.HTTPError:
                self._count(False)
                await asyncio.sleep(0.05)

    async def _sql_writer(self) -> None:
        rng = random.Random()
        conn: psycopg.AsyncConnection[object] | None = None
        while not self.stop.is_set():
            await asyncio.sleep(0.02)
            order_id = rng.choice(self.sql_rows)
            log = self.sql_quantities.setdefault(order_id, RowLog())
            quantity = rng.randint(1, 10_000)
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        self.database_url, autocommit=True, connect_timeout=2
                    )
                log.attempt(quantity)
                await conn.execute(
                    "UPDATE orders SET quantity = %s WHERE id = %s", [quantity, order_id]
                )
                log.acknowledged(quantity)
                self._count(True)
            except psycopg.Error:
                self._count(False)
                if conn is not None:
                    await conn.close()
                conn = None
                await asyncio.sleep(0.05)
        if conn is not None:
            await conn.close()


def lost_writes(load: Load) -> list[str]:
    """Every acknowledged write that PostgreSQL does not hold (nor a later attempt)."""
    lost: list[str] = []
    with psycopg.connect(load.database_url) as conn:
        for order_id, log in load.api_orders.items():
            row = conn.execute("SELECT status FROM orders WHERE id = %s", [order_id]).fetchone()
            if row is None or not log.accepts(row[0]):
                lost.append(f"order {order_id}: status {row and row[0]}, acked {log.acked}")
        for order_id, log in load.sql_quantities.items():
            if log.acked is None:
                continue
            row = conn.execute("SELECT quantity FROM orders WHERE id = %s", [order_id]).fetchone()
            if row is None or not log.accepts(row[0]):
                lost.append(f"order {order_id}: quantity {row and row[0]}, acked {log.acked}")
    return lost
