"""Listener readiness: streaming and caught up with what was pending when it started."""

from __future__ import annotations

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
