"""Figure 4, the listener in catch-up: a backlog of row changes written while nothing
consumes, then drained by a bare consumer and by the listener, side by side.

Both slots are created before the backlog, so both hold exactly the same changes. Each
consumer runs in its own process; its clock runs from its slot becoming active to the
slot's confirmed position passing the backlog's last commit, so the listener's rate counts
every row's Redis work (and its delayed second pass) and excludes process start-up.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import psycopg

from bench.report import Section, Target, rate, ratio
from bench.stack import (
    Stack,
    create_slot,
    current_lsn,
    drop_slot,
    listener_env,
    rss_mb,
    spawn,
    start_listener,
    stop,
    wait_confirmed,
    wait_slot_active,
)

TXN_ROWS = 100


def write_backlog(url: str, rows: int) -> str:
    """`rows` row updates in transactions of TXN_ROWS; the WAL position after the last."""
    with psycopg.connect(url, autocommit=True) as conn:
        done = 0
        while done < rows:
            start = 1 + done % 100_000
            conn.execute(
                "UPDATE orders SET quantity = quantity + 1 WHERE id BETWEEN %s AND %s",
                [start, start + TXN_ROWS - 1],
            )
            done += TXN_ROWS
    return current_lsn(url)


def cpu_seconds(pid: int) -> float:
    """The user and system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(
    stack: Stack, slot: str, end: str, listener: dict[str, str] | None
) -> tuple[float, float, float]:
    """Seconds from the slot becoming active to `end` confirmed, the consumer's CPU seconds
    meanwhile, its peak RSS in MB. `listener`: its extra settings; None for the bare one."""
    if listener is not None:
        proc = start_listener(listener_env(stack, CDC_SLOT=slot, **listener))
    else:
        proc = spawn(
            ["bench.bare_consumer", "drain", slot, end], {"DATABASE_URL": stack.database_url}
        )
    try:
        wait_slot_active(stack.database_url, slot, proc)
        began = time.perf_counter()
        used = cpu_seconds(proc.pid)
        finished = wait_confirmed(stack.database_url, slot, end)
        used = cpu_seconds(proc.pid) - used
        peak = rss_mb(proc.pid, "VmHWM")
    finally:
        stop(proc)
    return finished - began, used, peak


# The consumers, in the order they drain each round: the bare one, then the listener with
# the decoder it runs by default (compiled where built) and with the pure reference decoder.
CONSUMERS: dict[str, dict[str, str] | None] = {
    "bare": None,
    "listener": {},
    "pure": {"CDC_DECODER": "pure"},
}
LABELS = {
    "bare": "bare consumer (read, confirm)",
    "listener": "listener (decode, rules, Redis, confirm)",
    "pure": "listener, pure-Python decoder (`CDC_DECODER=pure`)",
}


def run(stack: Stack, quick: bool) -> Section:
    rows, rounds = (100_000, 1) if quick else (1_000_000, 2)
    slots = [{name: f"bench_{name}_{r}" for name in CONSUMERS} for r in range(rounds)]
    for pair in slots:
        for slot in pair.values():
            create_slot(stack.database_url, slot)
    began = time.perf_counter()
    end = write_backlog(stack.database_url, rows)
    wrote = time.perf_counter() - began
    rates: dict[str, list[float]] = {name: [] for name in CONSUMERS}
    per_cpu: dict[str, list[float]] = {name: [] for name in CONSUMERS}
    peaks: list[float] = []
    try:
        for pair in slots:
            for name, settings in CONSUMERS.items():
                seconds, used, peak = drain(stack, pair[name], end, settings)
                rates[name].append(rows / seconds)
                per_cpu[name].append(rows / used if used else float("nan"))
                if name == "listener":
                    peaks.append(peak)
                drop_slot(stack.database_url, pair[name])
    finally:
        for pair in slots:
            for slot in pair.values():
                drop_slot(stack.database_url, slot)

    def share(name: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[name], rates["bare"], strict=True))

    ratio_now = share("listener")
    rows_s = statistics.median(rates["listener"])
    table = [
        [
            "consumer",
            "rows/s (median of rounds)",
            "÷ bare",
            "rows per CPU-second (median)",
        ]
    ]
    for name in CONSUMERS:
        table.append(
            [
                LABELS[name],
                rate(statistics.median(rates[name])),
                ratio(share(name)) if name != "bare" else "",
                rate(statistics.median(per_cpu[name])),
            ]
        )
    method = f"""
Method: two logical slots are created, then a backlog of {rows:,} row updates in
transactions of {TXN_ROWS} (`UPDATE orders ... WHERE id BETWEEN ...`; `orders` has
`REPLICA IDENTITY FULL`, so each change carries the old and the new row, 10 values each)
is written while nothing consumes ({wrote:.0f} s). Then, one after the other, a bare
consumer (`bench/bare_consumer.py`: the listener's transport, no decoding but the Commit,
confirms) drains one slot, the listener (`cdc-listener run`, default settings: the compiled
decoder where `make install` built it; a backlog's commits are past the visibility gap, so
no second pass) drains another, and the listener with the pure-Python decoder a third. Each
is timed from its slot becoming active until the slot's confirmed position passes the
backlog's last commit, which for the listener means every key invalidated in Redis; its CPU
time meanwhile (user and system, from `/proc`) gives rows per CPU-second, which the other
processes on the machine disturb far less than the wall-clock rate.
{rounds} round(s); each ratio is the median of the per-round ratios.
"""
    why = (
        "Per row the listener frames the message (a call into libpq and a view), reads the "
        "rule's six values with the compiled fast path (pgoutput.pick_update), adds them to "
        "the batch's sets, then names and packs three keys per order and two per customer "
        "for Redis, whose script runs meanwhile; the bare consumer frames the message and "
        "decodes its Commits only. A profile puts about a quarter of the listener's time in "
        "the compiled fast path and the rest, in Python, spread over those steps."
    )
    return Section(
        title="4. Listener catch-up",
        module="bench/catch_up.py",
        method=method,
        tables=[table],
        targets=[
            Target("listener ≥ 0.8 x bare consumer", ratio(ratio_now), ratio_now >= 0.8, why),
            Target("listener ≥ 0.5 x bare consumer", ratio(ratio_now), ratio_now >= 0.5, why),
            Target("listener ≥ 50,000 rows/s", rate(rows_s), rows_s >= 50_000, why),
            Target(
                "listener peak RSS through the catch-up < 150 MB",
                f"{max(peaks):.0f} MB",
                max(peaks) < 150,
            ),
        ],
    )
