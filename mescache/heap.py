"""Garbage-collector settings for the long-running processes (API workers, listener, writer).

CPython's full collection walks every tracked object. A started API worker holds a few
hundred thousand of them (FastAPI, pydantic, psycopg, redis-py), nearly all alive until
exit, and objects of requests still waiting on Redis survive the young collections and
count towards the next full one: measured here, a full collection every second or so
under load, each pausing the process about 40 ms (the dashboard's p99 latency was that
pause). So once a process has started:

- everything alive then is frozen (``gc.freeze``): full collections no longer walk it;
- the young generation is collected every 10,000 allocations instead of 700, so fewer
  short-lived objects are promoted only to die old.

Garbage without cycles is freed by reference counting as before; only cyclic garbage
waits a little longer, bounded by the same thresholds.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Call once start-up is done, before serving."""
    gc.collect()  # what start-up left behind goes now, not into the frozen set
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
