"""`make bench`: run every figure on one private stack and rewrite BENCHMARKS.md.

QUICK=1 runs a smoke version (short runs, small backlogs) and writes the report too, marked
as such. ONLY=read_path,lag (module names) runs a subset, for development.
Run: .venv/bin/python -m bench.run
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import catch_up, gap_checker, lag, memory, near_staleness, offload, read_path
from bench.load import have_wrk
from bench.report import Section, render
from bench.stack import Stack, machine, private_stack

FIGURES: dict[str, Callable[[Stack, bool], Section]] = {
    "read_path": read_path.run,
    "near_staleness": near_staleness.run,
    "offload": offload.run,
    "lag": lag.run,
    "catch_up": catch_up.run,
    "memory": memory.run,
    "gap": gap_checker.run,
}

INTRO = """
# Benchmarks

What the cache is worth, in numbers side by side. `make bench` starts a private PostgreSQL
and Redis with the demo data (100,000 orders, about 1,000 of them `new` or `in_progress`),
runs every figure below and rewrites this file; `make bench QUICK=1` is a smoke run of a
few minutes. The machine is shared and noisy, so each figure is a ratio of runs made side
by side in the same run; absolute rates drift from run to run and between machines.
"""


def main() -> int:
    quick = os.environ.get("QUICK", "") not in ("", "0")
    only = [name for name in os.environ.get("ONLY", "").split(",") if name]
    unknown = set(only) - set(FIGURES)
    if unknown:
        print(f"bench: unknown figure(s) {sorted(unknown)}; known: {list(FIGURES)}")
        return 2
    if not have_wrk():
        print("bench: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 1
    started = time.monotonic()
    sections: list[Section] = []
    with private_stack() as stack:
        info = machine(stack)
        for name, figure in FIGURES.items():
            if only and name not in only:
                continue
            begun = time.monotonic()
            print(f"bench: {name}...", flush=True)
            sections.append(figure(stack, quick))
            print(f"bench: {name} done in {time.monotonic() - begun:.0f} s", flush=True)
    took = time.monotonic() - started
    note = (
        f"Run: {datetime.date.today().isoformat()}, "
        f"{'`QUICK=1` (smoke run: short runs, small backlogs)' if quick else 'full run'}, "
        f"{took / 60:.1f} minutes."
    )
    text = render(INTRO, info, sections, note)
    target = Path(os.environ.get("BENCH_OUT", "BENCHMARKS.md"))
    target.write_text(text, encoding="utf-8")
    print(text)
    print(f"bench: wrote {target} in {took:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
