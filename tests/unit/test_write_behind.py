"""The pure parts of write-behind: entry parsing, the overlay merge, the keys a flush keeps."""

from __future__ import annotations

import json

import pytest

from mescache.keys import KeySchema
from mescache.pending import Overlay, merge
from writer.entries import parse_entry
from writer.errors import MalformedEntry

ROW = json.dumps(
    {"id": 7, "customer": "Zoë", "status": "new", "total_price": "12.50"},
    separators=(",", ":"),
    ensure_ascii=False,
).encode()


def test_merge_shows_the_pending_status_and_keeps_everything_else() -> None:
    merged = json.loads(merge(ROW, Overlay(7, "1-0", "in_progress", sealed=False)))
    assert merged == {**json.loads(ROW), "status": "in_progress"}
    assert merge(ROW, None) == ROW
    assert merge(ROW, Overlay(7, "1-0", "new", sealed=True)) == ROW  # untouched bytes


def test_entries_parse_strictly() -> None:
    entry = parse_entry("5-1", {"order_id": "7", "status": "done", "from": "in_progress"})
    assert (entry.order_id, entry.status, entry.from_status) == (7, "done", "in_progress")
    for bad in (
        {"status": "done"},
        {"order_id": "-1", "status": "done"},
        {"order_id": "0", "status": "done"},
        {"order_id": "7", "status": "shipped"},
        {"order_id": "7"},
    ):
        with pytest.raises(MalformedEntry):
            parse_entry("5-1", bad)


@pytest.mark.parametrize("prefix", ["", "shop1:"])
def test_pending_writes_outlive_a_flush_and_cache_keys_do_not(prefix: str) -> None:
    keys = KeySchema(prefix)
    assert keys.pending(3) == f"{prefix}order:{{3}}#pending"
    assert keys.pending_order(keys.pending(3)) == 3
    assert keys.pending_order(keys.order(3).name) is None
    for name in (keys.pending(3), keys.write_stream(), keys.dead_letters()):
        assert keys.outlives_flush(name), name
    for name in (keys.order(3).name, keys.order(3).fence, keys.dashboard().name):
        assert not keys.outlives_flush(name), name
