"""Watching Redis without polling it: key events (the stack enables them) recorded with
the monotonic clock, which is the same clock in every process of this machine."""

from __future__ import annotations

import threading
import time

import redis


class KeyEvents:
    """Records the first moment each key had an event (`del`, `expired`) while running."""

    def __init__(self, url: str, event: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(f"__keyevent@0__:{event}")
        self.seen: dict[bytes, float] = {}
        self.count: dict[bytes, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> KeyEvents:
        self._pubsub.get_message(timeout=1)  # the subscribe confirmation
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pubsub.close()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            at = time.perf_counter()
            key = message["data"]
            self.seen.setdefault(key, at)
            self.count[key] = self.count.get(key, 0) + 1
