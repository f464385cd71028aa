"""Tests of the pgoutput decoder on payloads captured from a real PostgreSQL 15, and on bad input.

The fixture was written by tests/fixtures/capture_pgoutput.py; its scenario's step names are what
these tests select messages by, so OIDs and xids are free to differ between captures.
"""

import copy
import json
import pickle
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_listener.errors import DecodeError, ListenerError
from cdc_listener.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    Relation,
    Truncate,
    TypeInfo,
    Unchanged,
    Update,
    decode,
    row_as_text,
)
from cdc_listener.replication import parse_lsn

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pgoutput" / "captured.json"
CAPTURE = json.loads(FIXTURE.read_text())
ENTRIES: list[dict[str, Any]] = CAPTURE["messages"]
PAYLOADS = [bytes.fromhex(entry["hex"]) for entry in ENTRIES]
KINDS = {
    "B": Begin,
    "C": Commit,
    "O": Origin,
    "R": Relation,
    "Y": TypeInfo,
    "I": Insert,
    "U": Update,
    "D": Delete,
    "T": Truncate,
}
IDS = [f"{i}-{entry['step']}-{entry['kind']}" for i, entry in enumerate(ENTRIES)]
# Hypothesis must not write a database into the work tree, nor fail on a slow machine.
FUZZ = settings(
    database=None, deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)

INT8, INT4, TEXT, NUMERIC, TIMESTAMPTZ, JSONB = 20, 23, 25, 1700, 1184, 3802


def step(name: str) -> list[Message]:
    """The decoded messages of one scenario step, in stream order."""
    found = [decode(p) for p, e in zip(PAYLOADS, ENTRIES, strict=True) if e["step"] == name]
    assert found, f"fixture has no step {name!r}"
    return found


def only(messages: list[Message], kind: type[Any]) -> Any:
    matches = [m for m in messages if isinstance(m, kind)]
    assert len(matches) == 1, matches
    return matches[0]


def relations() -> Iterator[Relation]:
    return (m for m in map(decode, PAYLOADS) if isinstance(m, Relation))


def relation(name: str, columns: int) -> Relation:
    """The relation message of table ``name`` with ``columns`` columns (before or after DDL)."""
    return next(r for r in relations() if r.name == name and len(r.columns) == columns)


# Captured payloads, decoded.


@pytest.mark.parametrize(("entry", "payload"), list(zip(ENTRIES, PAYLOADS, strict=True)), ids=IDS)
def test_every_captured_payload_decodes_to_its_type(entry: dict[str, Any], payload: bytes) -> None:
    assert isinstance(decode(payload), KINDS[entry["kind"]])


def test_fixture_covers_every_message_type() -> None:
    assert {entry["kind"] for entry in ENTRIES} == set(KINDS)
    assert CAPTURE["proto_version"] == 1
    assert CAPTURE["server_version"].startswith("15.")


def test_transactions_are_framed_and_consistent() -> None:
    by_xid: dict[int, list[Message]] = {}
    for entry, payload in zip(ENTRIES, PAYLOADS, strict=True):
        by_xid.setdefault(entry["xid"], []).append(decode(payload))
    assert len(by_xid) >= 10
    previous_end = 0
    for xid, messages in by_xid.items():
        begin, commit = messages[0], messages[-1]
        assert isinstance(begin, Begin)
        assert isinstance(commit, Commit)
        assert not any(isinstance(m, Begin | Commit) for m in messages[1:-1])
        assert begin.xid == xid
        assert commit.commit_lsn == begin.final_lsn
        assert commit.end_lsn > commit.commit_lsn
        assert commit.commit_time == begin.commit_time
        assert commit.flags == 0
        assert begin.final_lsn >= previous_end
        previous_end = commit.end_lsn


def test_orders_relation_has_full_identity_and_typed_columns() -> None:
    orders = relation("orders", 8)
    assert (orders.namespace, orders.replica_identity) == ("public", "f")
    assert [(c.name, c.type_oid) for c in orders.columns] == [
        ("id", INT8),
        ("customer", TEXT),
        ("status", TEXT),
        ("params", JSONB),
        ("total_price", NUMERIC),
        ("created_at", TIMESTAMPTZ),
        ("updated_at", TIMESTAMPTZ),
        ("notes", TEXT),
    ]
    # With REPLICA IDENTITY FULL the server flags every column as part of the key.
    assert all(c.is_key and c.flags == 1 for c in orders.columns)
    numeric = orders.columns[4]
    assert numeric.type_modifier == ((12 << 16) | 2) + 4  # numeric(12,2) as atttypmod
    assert orders.columns[0].type_modifier == -1


def test_customers_relation_has_default_identity_and_an_enum_type() -> None:
    messages = step("insert_customers")
    tier_type, customers = only(messages, TypeInfo), only(messages, Relation)
    assert (tier_type.namespace, tier_type.name) == ("public", "customer_tier")
    assert messages.index(tier_type) < messages.index(customers)
    assert customers.replica_identity == "d"
    assert [(c.name, c.is_key) for c in customers.columns] == [
        ("id", True),
        ("name", False),
        ("tier", False),
        ("bio", False),
    ]
    assert customers.columns[2].type_oid == tier_type.oid


def test_inserts_carry_values_and_nulls() -> None:
    messages = step("insert_orders")
    orders = only(messages, Relation)
    alice, bob = (row_as_text(orders, m.new) for m in messages if isinstance(m, Insert))
    assert all(m.relation_oid == orders.oid for m in messages if isinstance(m, Insert))
    assert (alice["customer"], alice["status"], alice["total_price"]) == ("alice", "new", "19.90")
    assert isinstance(alice["params"], str)
    assert json.loads(alice["params"]) == {"sku": "A-1", "qty": 2}
    assert alice["notes"] is None
    assert isinstance(alice["created_at"], str)
    assert alice["created_at"].endswith("+00")
    assert (bob["params"], bob["total_price"], bob["notes"]) == (None, None, None)


def test_update_with_full_identity_sends_the_whole_old_row() -> None:
    update = only(step("update_order_full"), Update)
    orders = relation("orders", 8)
    assert update.relation_oid == orders.oid
    assert update.old_kind == "O"
    assert update.old is not None
    old, new = row_as_text(orders, update.old), row_as_text(orders, update.new)
    assert (old["status"], new["status"]) == ("new", "shipped")
    assert old["id"] == new["id"] == "1"
    assert old["notes"] is None
    assert old["updated_at"] != new["updated_at"]


def test_delete_with_full_identity_sends_the_whole_old_row() -> None:
    delete = only(step("delete_order_full"), Delete)
    row = row_as_text(relation("orders", 8), delete.old)
    assert delete.old_kind == "O"
    assert (row["id"], row["customer"], row["params"]) == ("2", "bob", None)


def test_update_without_key_change_sends_no_old_row() -> None:
    update = only(step("update_customer_no_key_change"), Update)
    assert (update.old, update.old_kind) == (None, None)
    assert update.new == (b"2", b"dave", b"gold", b"short bio")


def test_update_with_key_change_sends_the_old_key_with_other_columns_null() -> None:
    update = only(step("update_customer_key_change"), Update)
    assert update.old_kind == "K"
    assert update.old == (b"2", None, None, None)
    assert update.new[0] == b"3"


def test_delete_with_default_identity_sends_the_key() -> None:
    delete = only(step("delete_customer"), Delete)
    assert (delete.old_kind, delete.old) == ("K", (b"1", None, None, None))


def test_unchanged_toasted_value_is_marked_not_sent() -> None:
    update = only(step("update_toasted"), Update)
    row = row_as_text(relation("customers", 4), update.new)
    assert row["bio"] is UNCHANGED
    assert (row["id"], row["name"]) == ("10", "erin b.")
    assert update.old is None
    # The insert that stored the value was too big to keep; the fixture says so.
    (omitted,) = CAPTURE["omitted"]
    assert (omitted["step"], omitted["kind"]) == ("insert_toasted", "I")
    assert omitted["size"] > 8192


def test_origin_follows_begin() -> None:
    messages = step("insert_with_origin")
    assert isinstance(messages[1], Origin)
    assert messages[1].name == "capture_origin"
    assert messages[1].commit_lsn == parse_lsn("0/ABCDEF")
    assert isinstance(messages[2], Insert)


def test_alter_table_sends_a_new_relation_and_old_shape_no_longer_fits() -> None:
    messages = step("insert_order_after_alter")
    new_shape, insert = only(messages, Relation), only(messages, Insert)
    old_shape = relation("orders", 8)
    assert new_shape.oid == old_shape.oid
    assert new_shape.columns[:8] == old_shape.columns
    assert new_shape.columns[8] == Column(1, "priority", INT4, -1)
    assert row_as_text(new_shape, insert.new)["priority"] == "5"
    with pytest.raises(DecodeError, match=r"9 values but relation public\.orders has 8"):
        row_as_text(old_shape, insert.new)


def test_truncates_carry_options_and_relation_oids() -> None:
    plain = only(step("truncate_customers"), Truncate)
    everything = only(step("truncate_all_cascade"), Truncate)
    orders, customers = relation("orders", 9), relation("customers", 4)
    assert plain == Truncate(0, (customers.oid,))
    assert not plain.cascade
    assert not plain.restart_identity
    assert everything.options == 3
    assert everything.cascade
    assert everything.restart_identity
    assert set(everything.relation_oids) == {orders.oid, customers.oid}


# Strictness.


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_every_proper_prefix_is_rejected(payload: bytes) -> None:
    for end in range(len(payload)):
        with pytest.raises(DecodeError):
            decode(payload[:end])


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_a_trailing_byte_is_rejected(payload: bytes) -> None:
    with pytest.raises(DecodeError, match=f"1 trailing bytes at offset {len(payload)}"):
        decode(payload + b"\0")


@pytest.mark.parametrize("tag", sorted(set(range(256)) - {ord(k) for k in KINDS}))
def test_unknown_message_types_are_rejected(tag: int) -> None:
    with pytest.raises(DecodeError, match="unknown pgoutput message type"):
        decode(bytes([tag]) + PAYLOADS[0][1:])


def test_empty_payload_is_rejected_with_the_listeners_root_error() -> None:
    with pytest.raises(ListenerError, match="empty") as caught:
        decode(b"")
    assert caught.type is DecodeError


def test_errors_name_the_message_type_and_offset() -> None:
    insert = bytes.fromhex(next(e["hex"] for e in ENTRIES if e["kind"] == "I"))
    bad = bytearray(insert)
    bad[8] = ord("x")  # the first value's kind: 'I', oid(4), 'N', ncols(2), here
    expected = r"Insert \('I'\).*unknown tuple value kind 'x' at offset 8"
    with pytest.raises(DecodeError, match=expected):
        decode(bad)
    with pytest.raises(DecodeError, match=r"Origin \('O'\).*offset 9 has no NUL terminator"):
        decode(b"O" + bytes(8) + b"abc")
    with pytest.raises(DecodeError, match="not UTF-8"):
        decode(b"O" + bytes(8) + b"\xff\0")
    with pytest.raises(DecodeError, match="unknown replica identity 'x'"):
        decode(b"R" + bytes(4) + b"public\0t\0x\0\0")
    with pytest.raises(DecodeError, match=r"Begin \('B'\).*truncated"):
        decode(b"B" + bytes(19))


def test_wrong_tuple_tags_are_rejected() -> None:
    row = b"\0\x01n"
    with pytest.raises(DecodeError, match="expected 'N' tuple, got 'K'"):
        decode(b"I" + bytes(4) + b"K" + row)
    with pytest.raises(DecodeError, match="expected 'K' or 'O' tuple, got 'N'"):
        decode(b"D" + bytes(4) + b"N" + row)
    with pytest.raises(DecodeError, match="expected 'N' tuple, got 'O'"):
        decode(b"U" + bytes(4) + b"K" + row + b"O" + row)
    assert decode(b"U" + bytes(4) + b"O" + row + b"N" + row) == Update(0, (None,), "O", (None,))


def test_value_lengths_and_counts_past_the_end_are_rejected() -> None:
    with pytest.raises(DecodeError, match="value of 5 bytes at offset 13 runs past the end"):
        decode(b"I" + bytes(4) + b"N\0\x01t\0\0\0\x05abcd")
    with pytest.raises(DecodeError, match="4294967295 relation OIDs"):
        decode(b"T\xff\xff\xff\xff\0")


def test_binary_values_are_accepted_as_bytes() -> None:
    message = decode(b"I\0\0\0\x07N\0\x02b\0\0\0\x02\x00\x01u")
    assert message == Insert(7, (b"\x00\x01", UNCHANGED))


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_any_bytes_like_input_decodes_the_same(wrap: Any) -> None:
    for payload in PAYLOADS:
        assert decode(wrap(payload)) == decode(payload)


def test_row_as_text_rejects_non_utf8() -> None:
    customers = relation("customers", 4)
    with pytest.raises(DecodeError, match="column 'name' is not UTF-8"):
        row_as_text(customers, (b"1", b"\xff", None, UNCHANGED))


def test_unchanged_is_a_singleton() -> None:
    assert Unchanged() is UNCHANGED
    assert repr(UNCHANGED) == "UNCHANGED"
    assert copy.deepcopy(UNCHANGED) is UNCHANGED
    assert copy.copy(UNCHANGED) is UNCHANGED


def test_messages_are_frozen_and_slotted() -> None:
    message = decode(PAYLOADS[0])
    with pytest.raises(FrozenInstanceError):
        message.xid = 1  # type: ignore[misc, union-attr]
    assert not hasattr(message, "__dict__")


# Fuzzing: whatever the bytes, the answer is a message or a DecodeError.


def decodes_or_fails_cleanly(payload: bytes) -> None:
    try:
        message = decode(payload)
    except DecodeError:
        return
    assert isinstance(message, tuple(KINDS.values()))


def mutated_payload(data: st.DataObject) -> bytes:
    """A captured payload with one to four bytes set, inserted or deleted."""
    payload = bytearray(data.draw(st.sampled_from(PAYLOADS)))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload) - 1))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            payload[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            payload[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif len(payload) > 1:
            del payload[position]
    return bytes(payload)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(payload: bytes) -> None:
    decodes_or_fails_cleanly(payload)


@FUZZ
@given(st.sampled_from(sorted(KINDS)), st.binary(max_size=300))
def test_fuzz_random_bodies_of_known_types(kind: str, body: bytes) -> None:
    decodes_or_fails_cleanly(kind.encode() + body)


@FUZZ
@given(st.data())
def test_fuzz_mutated_captured_payloads(data: st.DataObject) -> None:
    decodes_or_fails_cleanly(mutated_payload(data))


def test_row_changes_keep_their_relation_oid() -> None:
    row = b"\0\x01n"
    oid = b"\0\x01\x02\x03"
    assert decode(b"I" + oid + b"N" + row) == Insert(0x10203, (None,))
    assert decode(b"U" + oid + b"N" + row) == Update(0x10203, None, None, (None,))
    assert decode(b"D" + oid + b"O" + row) == Delete(0x10203, (None,), "O")
    assert decode(b"D" + oid + b"K" + row) == Delete(0x10203, (None,), "K")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty pgoutput message"),
        (
            b"I" + bytes(4) + b"K\0\x01n",
            "Insert ('I') message: expected 'N' tuple, got 'K' at offset 5",
        ),
        (
            b"D" + bytes(4) + b"N\0\x01n",
            "Delete ('D') message: expected 'K' or 'O' tuple, got 'N' at offset 5",
        ),
        (
            b"U" + bytes(4) + b"K\0\x01nO\0\x01n",
            "Update ('U') message: expected 'N' tuple, got 'O' at offset 9",
        ),
        # the second value ends exactly at the end of the buffer: the third is what is missing
        (
            b"I" + bytes(4) + b"N\0\x03nt\0\0\0\x02ab",
            "Insert ('I') message: tuple of 3 columns truncated at offset 16",
        ),
        (
            b"I" + bytes(4) + b"N\0\x03unt\0\0",
            "Insert ('I') message: tuple of 3 columns truncated at offset 10",
        ),
        (
            b"I" + bytes(4) + b"N\0\x03nux",
            "Insert ('I') message: unknown tuple value kind 'x' at offset 10",
        ),
        (
            b"I" + bytes(4) + b"N\0\x02nt\0\0\0\x05abcd",
            "Insert ('I') message: value of 5 bytes at offset 14 runs past the end (18)",
        ),
    ],
)
def test_errors_say_exactly_what_is_wrong_and_where(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    assert str(caught.value) == (reason if reason.startswith("empty") else f"pgoutput {reason}")


def test_unchanged_pickles_as_the_singleton() -> None:
    assert pickle.loads(pickle.dumps(UNCHANGED)) is UNCHANGED  # noqa: S301  # our own bytes


def test_a_truncate_names_as_many_relations_as_it_counts() -> None:
    assert decode(b"T\0\0\0\0\x02") == Truncate(2, ())
    with pytest.raises(DecodeError) as caught:
        decode(b"T\0\0\0\x02\0\0\0\0\x07")
    assert str(caught.value) == (
        "pgoutput Truncate ('T') message: 2 relation OIDs at offset 6 run past the end (10)"
    )


def test_a_value_of_more_than_16_mib_decodes_whole() -> None:
    # Every byte of the 4-byte length is distinct and non-zero, so each one's place counts.
    size = 0x01020304
    value = b"v" * size
    payload = b"I\0\0\0\x07N\0\x02t" + size.to_bytes(4, "big") + value + b"n"
    message = decode(payload)
    assert isinstance(message, Insert)
    assert len(message.new) == 2
    assert message.new[0] == value
    assert message.new[1] is None
