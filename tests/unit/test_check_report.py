"""The checker's pure parts: key classification, diffs, and the sampling figures."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from cdc_listener.check import describe_diff
from cdc_listener.lag_probe import SampleReport
from mescache.keys import COMPANION, KEPT, TAG_SET, UNKNOWN, VALUE_KINDS, KeySchema
from mescache.pricing import PriceRequest
from mescache.views import VIEWS, Page


def test_every_name_the_schema_builds_classifies_back_to_its_key() -> None:
    for keys in (KeySchema(), KeySchema("shop1:")):
        built = {
            "order": keys.order(42),
            "dashboard": keys.dashboard(),
            "new_orders": keys.new_orders(),
            "status_page": keys.status_page("done", 900, 50),
            "probe": keys.probe(3),
            "price": keys.price(4, 2, "size=17.5"),
        }
        for kind, key in built.items():
            ref = keys.classify(key.name)
            assert (ref.kind, ref.key) == (kind, key)
            for companion in (key.fence, key.lease, *([key.token] if key.token else [])):
                assert keys.classify(companion).kind == COMPANION
        first = keys.classify(keys.status_page("new", None, 20).name)
        assert first.key == keys.status_page("new", None, 20)
        assert keys.classify(keys.status_family("new")).kind == TAG_SET
        assert keys.classify(keys.price_family_of_model(7)).kind == TAG_SET
        assert keys.classify(keys.all_prices(7)).kind == TAG_SET
        assert keys.classify(keys.price_family_of_material(2, 7)).kind == TAG_SET
        assert keys.classify(keys.price_requests()).kind == KEPT
        assert keys.classify(keys.prefix + "something:else").kind == UNKNOWN
        assert keys.classify(keys.pending(5)).kind == KEPT
        assert keys.classify(keys.write_stream()).kind == KEPT
    assert KeySchema("shop1:").classify(KeySchema().order(1).name).kind == UNKNOWN  # another one


def test_every_kind_with_a_database_value_is_a_view_of_the_catalogue() -> None:
    assert set(VALUE_KINDS) - set(VIEWS) == {"probe"}
    assert set(VIEWS) <= set(VALUE_KINDS)


@pytest.mark.parametrize("kind", sorted(VIEWS))
def test_a_views_parameters_read_back_from_its_key_name_build_the_same_key(kind: str) -> None:
    view = VIEWS[kind]
    examples: dict[str, object] = {
        "order": 17,
        "dashboard": None,
        "new_orders": None,
        "catalogue": None,
        "status_page": Page("done", 99, 20),
        "customer_page": Page("Zoë {VIP} *?: 50% / #1", None, 50),
        "price": PriceRequest(5, 2, Decimal("17.5")),
    }
    for keys in (KeySchema(), KeySchema("shop1:")):
        key = view.key(keys, examples[kind])
        ref = keys.classify(key.name)
        assert ref.kind == kind
        assert view.parse(ref.params) == examples[kind]
        assert ref.key == key


def order(order_id: int, status: str) -> dict[str, object]:
    return {"id": order_id, "status": status, "quantity": 1}


def test_diffs_name_what_differs() -> None:
    one = describe_diff(json.dumps(order(1, "new")).encode(), json.dumps(order(1, "done")).encode())
    assert one == "status: cached 'new', database 'done'"
    assert describe_diff(b"{}", None) == "cached, but PostgreSQL has no such row"
    cached = {"items": [order(3, "new"), order(2, "new"), order(1, "new")]}
    fresh = {"items": [order(4, "new"), order(3, "in_progress"), order(2, "new")]}
    text = describe_diff(json.dumps(cached).encode(), json.dumps(fresh).encode())
    assert text == (
        "missing from cache: ids [4]; only in cache: ids [1]; changed: ids [3];"
        " id 3: status: cached 'new', database 'in_progress'"
    )


def test_sample_figures_count_missed_samples_as_slow() -> None:
    report = SampleReport(delays=[0.001, 0.002, 0.05, 0.5], missed=1, timeout=5.0)
    assert report.count == 5
    assert report.within(0.010) == 0.4
    assert report.within(0.100) == 0.6
    assert report.within(1.0) == 0.8
    assert report.percentile(0.5) == 0.05
    assert report.percentile(0.99) is None  # the slowest sample never arrived
    data = report.as_json()
    assert data["within"] == {"10ms": 0.4, "100ms": 0.6, "1000ms": 0.8}
    assert data["missed"] == 1
    assert "not invalidated within 5s: 1" in report.summary()
