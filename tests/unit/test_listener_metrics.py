"""Listener readiness: streaming and caught up with what was pending when it started,
hearing from the server, and confirming progress."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdc_listener.metrics import Applied, ListenerMetrics


def samples(metrics: ListenerMetrics) -> dict[str, float]:
    text = metrics.exposition().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_ready_only_once_what_was_pending_at_start_is_confirmed() -> None:
    metrics = ListenerMetrics("logical", "orders_cache")
    assert not metrics.ready
    metrics.source_started(pending_lsn=1000)
    metrics.confirmed(999)
    assert not metrics.ready
    assert samples(metrics)["cdc_listener_ready"] == 0
    metrics.confirmed(1000)
    assert metrics.ready
    assert samples(metrics)["cdc_listener_confirmed_lsn"] == 1000
    metrics.source_lost()
    assert not metrics.ready
    metrics.confirmed(2000)  # a late report from a lost stream does not make it ready
    assert not metrics.ready


def test_notify_is_ready_once_the_outbox_was_drained() -> None:
    metrics = ListenerMetrics("notify", "orders_cache")
    metrics.drained()
    assert not metrics.ready  # not listening yet
    metrics.source_started()
    assert not metrics.ready
    metrics.drained()
    assert metrics.ready


def test_applied_batches_add_up_and_time_their_oldest_commit() -> None:
    metrics = ListenerMetrics("logical", "orders_cache")
    metrics.batch_applied(3, 2, None, Applied(invalidated=4, refreshed=1, families=2))
    metrics.batch_applied(1, 1, 0.004, Applied(invalidated=1))
    out = samples(metrics)
    assert out["cdc_listener_changes_applied_total"] == 4
    assert out["cdc_listener_transactions_applied_total"] == 3
    assert out["cdc_listener_keys_invalidated_total"] == 5
    assert out["cdc_listener_keys_refreshed_total"] == 1
    assert out["cdc_listener_families_invalidated_total"] == 2
    # only the batch with a known lag is observed
    assert out["cdc_listener_commit_apply_lag_seconds_count"] == 1
    assert out["cdc_listener_commit_apply_lag_seconds_sum"] == 0.004
    assert "cdc_listener_slot_retained_wal_bytes" not in out  # unknown until polled


def test_registries_are_per_daemon() -> None:
    first, second = ListenerMetrics("logical", "a"), ListenerMetrics("logical", "b")
    first.received += 5
    assert samples(first)["cdc_listener_changes_received_total"] == 5
    assert samples(second)["cdc_listener_changes_received_total"] == 0


def test_stale_finds_are_counted_by_kind_from_zero() -> None:
    metrics = ListenerMetrics("logical", "orders_cache")
    before = samples_by_kind(metrics)
    assert before["order"] == 0
    assert before["dashboard"] == 0
    assert "probe" not in before  # a probe key holds no database value
    metrics.stale("order")
    metrics.stale("order")
    assert samples_by_kind(metrics)["order"] == 2
    assert "cdc_listener_write_behind_dead_letters" not in samples(metrics)  # not polled yet
    metrics.dead_letters = 3
    assert samples(metrics)["cdc_listener_write_behind_dead_letters"] == 3


def samples_by_kind(metrics: ListenerMetrics) -> dict[str, float]:
    text = metrics.exposition().decode()
    return {
        s.labels["kind"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "cdc_listener_stale_keys_found_total"
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def streaming(clock: Clock) -> ListenerMetrics:
    metrics = ListenerMetrics("logical", "orders_cache", liveness=10.0, clock=clock)
    metrics.source_started(pending_lsn=100)
    metrics.confirmed(100)
    assert metrics.ready
    return metrics


def test_not_ready_while_the_server_is_silent_for_half_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    metrics = streaming(clock)
    clock.now += 4.9
    metrics.check()
    assert metrics.ready
    clock.now += 0.2
    assert metrics.unready_reason() == "server silent for 5.1 s"
    assert samples(metrics)["cdc_listener_ready"] == 0
    assert samples(metrics)["cdc_listener_silence_seconds"] == pytest.approx(5.1)
    with caplog.at_level(logging.INFO, "cdc_listener.metrics"):
        metrics.check()
        metrics.check()  # one line per change, not per check
        metrics.heard()
        metrics.check()
    assert [r.getMessage() for r in caplog.records] == [
        "listener not ready",
        "listener ready again",
    ]
    assert caplog.records[0].reason == "server silent for 5.1 s"  # type: ignore[attr-defined]
    assert metrics.ready


def test_not_ready_while_the_confirmed_position_stalls_behind_the_servers_wal() -> None:
    clock = Clock()
    metrics = streaming(clock)
    metrics.server_lsn = 500  # the stream delivered commits up to here
    clock.now += 4.0
    metrics.heard()  # keepalives still arrive: the connection lives, the pipeline does not
    clock.now += 4.0
    metrics.heard()
    clock.now += 2.0
    reason = metrics.unready_reason()
    assert reason is not None
    assert reason.startswith("confirmed position 0/64 stalled for 10.0 s, server at 0/1F4")
    assert samples(metrics)["cdc_listener_stalled"] == 1
    metrics.confirmed(500)
    assert metrics.ready
    assert samples(metrics)["cdc_listener_stalled"] == 0


def test_a_quiet_server_whose_wal_stands_still_is_no_stall() -> None:
    clock = Clock()
    metrics = streaming(clock)
    metrics.server_lsn = 100
    for _ in range(10):
        clock.now += 3.0
        metrics.heard()
    assert metrics.ready
