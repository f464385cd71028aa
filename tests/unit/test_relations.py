"""The listener's shortcut for an `orders` update gives the rule's targets, exactly."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from cdc_listener.pgoutput import UNCHANGED, Column, Relation, Update, Value
from cdc_listener.relations import RelationCache, changes_of
from mescache.orders import STATUSES
from mescache.rules import Touched, add_change

ORDERS = Relation(
    16384,
    "public",
    "orders",
    "f",
    tuple(
        Column(1, name, 25, -1)
        for name in ("quantity", "id", "note", "status", "model_id", "customer")
    ),
)
OTHER = Relation(16385, "public", "materials", "f", ORDERS.columns)

# Mostly what a real update carries, now and then what must leave the shortcut.
odd: list[Value] = [None, UNCHANGED, b"x", b""]
ids = st.one_of(st.sampled_from([b"1", b"7", b"42"]), st.sampled_from(odd))
statuses = st.one_of(st.sampled_from([s.encode() for s in STATUSES]), st.sampled_from(odd))
other = st.one_of(st.binary(max_size=3), st.none(), st.just(UNCHANGED))
customers = st.one_of(st.sampled_from([b"Anna K.", b"{x}*"]), st.sampled_from(odd))
rows = st.tuples(other, ids, other, statuses, other, customers)


def general(relations: RelationCache, message: Update) -> Touched:
    touched = Touched()
    for change in changes_of(message, relations):
        add_change(touched, change)
    return touched


def outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except ValueError:
        return ValueError


@given(
    old=st.one_of(st.none(), rows),
    new=rows,
    old_kind=st.sampled_from(["O", "K"]),
    oid=st.sampled_from([ORDERS.oid, OTHER.oid]),
)
def test_the_shortcut_touches_what_the_rule_touches(
    old: tuple[Value, ...] | None, new: tuple[Value, ...], old_kind: str, oid: int
) -> None:
    relations = RelationCache()
    relations.remember(ORDERS)
    relations.remember(OTHER)
    message = Update(oid, old, None if old is None else old_kind, new)
    expected = outcome(lambda: general(relations, message))
    touched = Touched()
    taken = outcome(lambda: relations.add_order_update(touched, message))
    if taken is ValueError:  # an id that is not a number: the rule fails on it too
        assert expected is ValueError
    elif taken:
        assert touched == expected
    else:
        assert touched == Touched()


def test_the_common_update_takes_the_shortcut() -> None:
    relations = RelationCache()
    relations.remember(ORDERS)
    row = (b"3", b"7", b"", b"in_progress", b"1", b"Anna K.")
    moved = (b"3", b"7", b"", b"in_progress", b"1", b"Bob")
    touched = Touched()
    assert relations.add_order_update(touched, Update(ORDERS.oid, row, "O", moved))
    assert touched == Touched(
        orders={7}, statuses={"in_progress"}, dashboard=True, customers={"Anna K.", "Bob"}
    )


def test_a_relation_without_customer_loses_the_shortcut() -> None:
    relations = RelationCache()
    relations.remember(Relation(ORDERS.oid, "public", "orders", "f", ORDERS.columns[:5]))
    row = (b"3", b"7", b"", b"new", b"1")
    assert not relations.add_order_update(Touched(), Update(ORDERS.oid, row, "O", row))


def test_a_relation_without_status_loses_the_shortcut() -> None:
    relations = RelationCache()
    relations.remember(ORDERS)
    relations.remember(Relation(ORDERS.oid, "public", "orders", "f", ORDERS.columns[:2]))
    row = (b"3", b"7")
    assert not relations.add_order_update(Touched(), Update(ORDERS.oid, row, "O", row))
