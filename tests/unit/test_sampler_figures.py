"""The consistency figure: the nines formula, its window, and its series on /metrics."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from cdc_listener.metrics import ListenerMetrics
from cdc_listener.sampler import Window, nines, summary


def test_nines_is_minus_log10_of_the_stale_share_capped_by_the_sample() -> None:
    assert nines(0, 0) is None  # no check: no figure, not a perfect one
    assert nines(1000, 10) == 2.0  # 1 % stale
    assert nines(1000, 1) == 3.0
    assert nines(1000, 0) == 3.0  # 1000 clean checks cannot show more than 3 nines
    assert nines(10, 0) == 1.0
    assert nines(4, 4) == 0.0  # everything stale
    assert math.isclose(nines(4500, 2) or 0.0, 3.352, abs_tol=0.001)


def test_the_window_forgets_what_is_older_than_it() -> None:
    now = [0.0]
    window = Window(60.0, lambda: now[0])
    for _ in range(100):
        window.checked()
    window.found_stale()
    assert window.figure() == {"nines": 2.0, "checks": 100, "stale": 1, "window_s": 60}
    now[0] = 30.0
    for _ in range(10):
        window.checked()
    now[0] = 60.5  # the first hundred checks and the stale one are out of the window
    assert window.figure() == {"nines": 1.0, "checks": 10, "stale": 0, "window_s": 60}
    now[0] = 200.0
    assert window.figure() == {"nines": None, "checks": 0, "stale": 0, "window_s": 60}


def test_a_value_is_summarised_by_length_and_hash_never_by_content() -> None:
    assert summary(None) == "none"
    text = summary(b'{"customer":"Ada"}')
    assert text.startswith("18 B blake2b:")
    assert "Ada" not in text
    assert summary(b"a") != summary(b"b")


def test_the_sampler_series_are_exported_before_any_sample() -> None:
    metrics = ListenerMetrics("logical", "orders_cache")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.exposition().decode())
        for s in f.samples
    }
    for source in ("invalidated", "random"):
        assert samples[("cdc_listener_consistency_checks_total", (("source", source),))] == 0
        assert samples[("cdc_listener_consistency_stale_total", (("source", source),))] == 0
    assert math.isnan(samples[("cdc_listener_consistency_nines", ())])
    assert samples[("cdc_listener_staleness_age_seconds_count", ())] == 0
    assert samples[("cdc_listener_invalidation_delay_seconds_count", ())] == 0
    assert samples[("cdc_listener_invalidation_probes_missed_total", ())] == 0
    metrics.consistency_nines = 2.5
    metrics.consistency_checks["random"] += 3
    text = metrics.exposition().decode()
    assert "cdc_listener_consistency_nines 2.5" in text
    assert 'cdc_listener_consistency_checks_total{source="random"} 3.0' in text
