"""The decoder's fast path (pgoutput.pick_update) against the whole decode: whenever it reads
values they are the Update's own, whenever decode fails it reads nothing, on the captured
payloads, every prefix of them and the fuzzer's inputs; and the compiled build's against the
pure one. The listener relies on it for every full-image orders update it reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc_listener.decoder import Pick, load_decoder
from cdc_listener.errors import DecodeError
from cdc_listener.pgoutput import Relation, Update, UpdateLayouts, decode, pick_update
from tests.unit.test_pgoutput import FUZZ, IDS, PAYLOADS, mutated_payload


def _layout(relation: Relation) -> tuple[int, tuple[int, ...]]:
    """Three columns wanted, out of their order: the first (as value 2), the second (as 0)
    and the third (as 1), as the listener's layout of orders asks for id, status, customer."""
    count = len(relation.columns)
    slots = [-1] * count
    for slot, column in ((2, 0), (0, 1), (1, 2)):
        slots[column] = slot
    return count, tuple(slots)


# Each table's shape as first captured (the fixture's later ALTER adds a column).
LAYOUTS: UpdateLayouts = {}
for _message in map(decode, PAYLOADS):
    if isinstance(_message, Relation) and len(_message.columns) >= 3:
        LAYOUTS.setdefault(_message.oid, _layout(_message))
FULL_UPDATES = [
    p
    for p in PAYLOADS
    if isinstance(m := decode(p), Update)
    and m.old_kind == "O"
    and m.old is not None
    and all(isinstance(v, bytes) for v in (*m.old[:3], *m.new[:3]))
]


def agrees(payload: bytes, layouts: UpdateLayouts = LAYOUTS) -> object:
    """What pick_update read, checked against decode of the same bytes."""
    picked = pick_update(payload, layouts)
    try:
        message = decode(payload)
    except DecodeError:
        assert picked is None, payload.hex()
        return None
    if picked is None:
        return None
    oid, old, new = picked
    assert isinstance(message, Update)
    assert message.relation_oid == oid
    assert message.old_kind == "O"
    assert message.old is not None
    count, slots = layouts[oid]
    assert len(message.old) == len(message.new) == count
    for column, slot in enumerate(slots):
        if slot >= 0:
            assert message.old[column] == old[slot]
            assert message.new[column] == new[slot]
    return picked


def test_every_full_image_update_of_a_known_relation_is_read() -> None:
    assert FULL_UPDATES  # the fixture has some
    for payload in FULL_UPDATES:
        message = decode(payload)
        assert isinstance(message, Update)
        assert message.old is not None
        picked = agrees(payload)
        assert picked == (
            message.relation_oid,
            (message.old[1], message.old[2], message.old[0]),
            (message.new[1], message.new[2], message.new[0]),
        )
        for wrap in (bytearray, memoryview):
            assert pick_update(wrap(payload), LAYOUTS) == picked


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_other_messages_prefixes_and_trailing_bytes_read_nothing(payload: bytes) -> None:
    if payload not in FULL_UPDATES:
        assert pick_update(payload, LAYOUTS) is None
    for end in range(len(payload)):
        assert agrees(payload[:end]) is None
    assert agrees(payload + b"\0") is None


def test_an_unknown_relation_or_a_missing_wanted_value_reads_nothing() -> None:
    payload = FULL_UPDATES[0]
    message = decode(payload)
    assert isinstance(message, Update)
    assert message.old is not None
    assert pick_update(payload, {}) is None
    count, slots = LAYOUTS[message.relation_oid]
    # A layout of another width does not fit the rows.
    assert pick_update(payload, {message.relation_oid: (count + 1, (*slots, -1))}) is None
    # A wanted column whose value is NULL in the fixture's row is not read.
    nulls = [c for c, v in enumerate(message.new) if v is None]
    if nulls:
        wanted = [-1] * count
        wanted[nulls[0]] = 0
        assert pick_update(payload, {message.relation_oid: (count, tuple(wanted))}) is None


def test_a_key_only_old_row_is_not_read() -> None:
    keyed = [p for p in PAYLOADS if isinstance(m := decode(p), Update) and m.old_kind == "K"]
    assert keyed
    for payload in keyed:
        message = decode(payload)
        assert isinstance(message, Update)
        layouts = {message.relation_oid: (len(message.new), (0,) + (-1,) * (len(message.new) - 1))}
        assert pick_update(payload, layouts) is None


@FUZZ
@given(st.data())
def test_fuzz_mutated_captured_payloads_agree(data: st.DataObject) -> None:
    agrees(mutated_payload(data))


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_update_bodies_agree(body: bytes) -> None:
    agrees(b"U" + body)


# The compiled build against the pure one.


def _compiled_pick() -> Pick:
    loaded = load_decoder()
    if loaded.implementation != "compiled":
        pytest.skip(f"the compiled decoder is not in use: {loaded.reason}")
    return loaded.pick_update


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_the_compiled_build_reads_the_same(payload: bytes) -> None:
    pick = _compiled_pick()
    for candidate in (payload, payload + b"\0", *(payload[:end] for end in range(len(payload)))):
        for wrap in (bytes, bytearray, memoryview):
            assert pick(wrap(candidate), LAYOUTS) == pick_update(candidate, LAYOUTS)


@FUZZ
@given(st.data())
def test_fuzz_the_compiled_build_reads_the_same(data: st.DataObject) -> None:
    pick = _compiled_pick()
    payload = mutated_payload(data)
    assert pick(payload, LAYOUTS) == pick_update(payload, LAYOUTS)


# Payloads built here: values and identifiers wide enough that every byte of a length, a
# count or an OID counts.

Built = bytes | None | str  # a value, NULL, or "u" for an unchanged TOASTed value


def _row(values: list[Built]) -> bytes:
    out = len(values).to_bytes(2, "big")
    for value in values:
        if value is None:
            out += b"n"
        elif isinstance(value, str):
            out += b"u"
        else:
            out += b"t" + len(value).to_bytes(4, "big") + value
    return out


def _update(oid: int, old: list[Built], new: list[Built], old_tag: bytes = b"O") -> bytes:
    return b"U" + oid.to_bytes(4, "big") + old_tag + _row(old) + b"N" + _row(new)


WIDE_OID = 0x81828384


def test_wide_identifiers_lengths_and_counts_are_read_whole() -> None:
    count = 300  # a count whose high byte is not 0
    big = bytes(range(256)) * 258 + b"!"  # 66,049 bytes: a length with three bytes set
    old: list[Built] = [b"%d" % i for i in range(count)]
    new = list(old)
    old[5], new[7], old[200] = big, big[::-1], None
    slots = [-1] * count
    slots[7], slots[5], slots[299] = 0, 1, 2
    layouts: UpdateLayouts = {WIDE_OID: (count, tuple(slots))}
    payload = _update(WIDE_OID, old, new)
    assert agrees(payload, layouts) == (
        WIDE_OID,
        (old[7], big, old[299]),
        (big[::-1], new[5], new[299]),
    )


@pytest.mark.parametrize("missing", [None, "u"])
def test_a_wanted_null_or_unchanged_value_is_not_read_an_unwanted_one_is_skipped(
    missing: Built,
) -> None:
    layouts: UpdateLayouts = {WIDE_OID: (4, (0, -1, 1, -1))}
    row: list[Built] = [b"1", missing, b"new", missing]
    assert agrees(_update(WIDE_OID, row, row), layouts) == (
        WIDE_OID,
        (b"1", b"new"),
        (b"1", b"new"),
    )
    wanted: list[Built] = [b"1", b"x", missing, b"y"]
    assert pick_update(_update(WIDE_OID, wanted, row), layouts) is None
    assert pick_update(_update(WIDE_OID, row, wanted), layouts) is None


def test_another_shape_a_key_row_or_a_missing_new_row_is_not_read() -> None:
    layouts: UpdateLayouts = {WIDE_OID: (2, (0, 1))}
    row: list[Built] = [b"1", b"new"]
    assert agrees(_update(WIDE_OID, row, row), layouts) is not None
    assert pick_update(_update(WIDE_OID, row, row, b"K"), layouts) is None
    assert pick_update(_update(WIDE_OID, [*row, b"x"], [*row, b"x"]), layouts) is None
    assert pick_update(_update(WIDE_OID, row, [*row, b"x"]), layouts) is None
    no_new = b"U" + WIDE_OID.to_bytes(4, "big") + b"O" + _row(row) + b"X" + _row(row)
    assert agrees(no_new, layouts) is None
    assert pick_update(_update(WIDE_OID + 1, row, row), layouts) is None


def test_values_are_bytes_whatever_the_payload_type() -> None:
    layouts: UpdateLayouts = {WIDE_OID: (2, (0, 1))}
    payload = _update(WIDE_OID, [b"1", b"old"], [b"1", b"new"])
    for wrap in (bytes, bytearray, memoryview):
        picked = pick_update(wrap(payload), layouts)
        assert picked is not None
        assert all(type(v) is bytes for v in (*picked[1], *picked[2]))


def test_a_layout_of_another_width_reads_nothing() -> None:
    payload = _update(WIDE_OID, [b"1", b"old"], [b"1", b"new"])
    assert pick_update(payload, {WIDE_OID: (2, (0, 1, -1))}) is None
    assert pick_update(payload, {WIDE_OID: (3, (0, 1))}) is None


def test_a_length_past_16_mib_is_read_whole() -> None:
    layouts: UpdateLayouts = {WIDE_OID: (1, (0,))}
    # A value claiming 16 MiB + 3 bytes, of which 3 follow: the message is cut short.
    claimed = b"t" + (0x01000003).to_bytes(4, "big") + b"abc"
    row = (1).to_bytes(2, "big") + claimed
    payload = b"U" + WIDE_OID.to_bytes(4, "big") + b"O" + row + b"N" + row
    assert agrees(payload, layouts) is None
    # And one that is all there.
    huge = b"h" * 0x01000003
    picked = agrees(_update(WIDE_OID, [huge], [b"small"]), layouts)
    assert picked == (WIDE_OID, (huge,), (b"small",))
