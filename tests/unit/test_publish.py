"""The change announcement: small, and enough for a page to know what to refetch."""

from __future__ import annotations

import json

from cdc_listener.apply import Batch
from cdc_listener.publish import MAX_LISTED_IDS, change_message
from mescache.rules import Touched


def test_a_batch_announces_its_orders_lsn_and_lag() -> None:
    batch = Batch()
    batch.add(Touched(orders={42, 7}, dashboard=True), {}, end_lsn=0x1_0000_00A0)
    batch.add(Touched(orders={7}), {}, end_lsn=0x1_0000_0F00)
    batch.lag = 0.0012345
    message = json.loads(change_message(batch, with_lsn=True))
    assert message == {
        "orders": [7, 42],
        "catalogue": False,
        "commits": 2,
        "lsn": "1/F00",
        "lag_ms": 1.234,
    }


def test_a_catalogue_change_is_announced_as_one() -> None:
    renamed = Batch()
    renamed.add(Touched(catalogue=True), {}, end_lsn=1)
    assert json.loads(change_message(renamed, with_lsn=True))["catalogue"] is True
    repriced = Batch()
    repriced.add(Touched(all_prices=True), {}, end_lsn=1)  # a pricing rule: no names changed
    assert json.loads(change_message(repriced, with_lsn=True))["catalogue"] is False


def test_notify_mode_has_no_lsn_and_an_unknown_lag_is_null() -> None:
    batch = Batch()
    batch.add(Touched(orders={3}), {}, end_lsn=0)
    message = json.loads(change_message(batch, with_lsn=False))
    assert message["lsn"] is None
    assert message["lag_ms"] is None


def test_too_many_or_all_orders_are_announced_as_null() -> None:
    many = Batch()
    many.add(Touched(orders=set(range(MAX_LISTED_IDS + 1))), {}, end_lsn=1)
    assert json.loads(change_message(many, with_lsn=True))["orders"] is None
    assert len(change_message(many, with_lsn=True)) < 200
    truncated = Batch()
    truncated.add(Touched(all_orders=True, dashboard=True), {}, end_lsn=1)
    assert json.loads(change_message(truncated, with_lsn=True))["orders"] is None


def test_the_oldest_commit_of_a_batch_sets_its_lag() -> None:
    batch = Batch()
    batch.add(Touched(orders={1}), {}, end_lsn=1, committed_at=100.0)
    batch.add(Touched(orders={2}), {}, end_lsn=2, committed_at=101.0)
    assert batch.oldest_commit == 100.0
