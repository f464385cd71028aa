"""The Redis breaker: open on failure, one probe after retry_after, closed on success."""

from __future__ import annotations

from api.breaker import RedisBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_on_failure_and_lets_one_probe_through_later() -> None:
    clock = Clock()
    breaker = RedisBreaker(retry_after=1.0, clock=clock)
    assert breaker.allow()
    breaker.failed(OSError("refused"))
    assert breaker.state == "open"
    assert not breaker.allow()
    assert not breaker.allow()
    assert breaker.bypassed == 2
    clock.now += 1.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for the probe's verdict
    breaker.succeeded()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.allow()
    assert breaker.failures == 1


def test_a_failed_probe_keeps_it_open() -> None:
    clock = Clock()
    breaker = RedisBreaker(retry_after=0.5, clock=clock)
    breaker.failed(TimeoutError())
    clock.now += 0.5
    assert breaker.allow()
    breaker.failed(TimeoutError())
    assert not breaker.allow()
    assert breaker.failures == 2


def test_every_failure_lets_the_app_drop_its_idle_connections() -> None:
    dropped: list[int] = []
    breaker = RedisBreaker(retry_after=1.0, clock=Clock(), on_failure=lambda: dropped.append(1))
    breaker.failed(TimeoutError("silent"))
    breaker.failed(TimeoutError("silent again"))  # a failed probe: its connections too
    breaker.succeeded()
    assert dropped == [1, 1]
