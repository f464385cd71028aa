"""The rule, as a pure function: change -> the targets it touches."""

from __future__ import annotations

from cdc_listener.pgoutput import UNCHANGED
from mescache.orders import STATUSES
from mescache.rules import Change, Touched, add_change, touched_by

ANNA = "Anna K."


def order(order_id: int, status: str, customer: str = ANNA) -> dict[str, object]:
    return {"id": str(order_id), "status": status, "quantity": "1", "customer": customer}


def test_a_move_from_new_to_in_progress_touches_exactly_its_keys() -> None:
    t = touched_by(Change("orders", "update", order(7, "new"), order(7, "in_progress")))
    assert t == Touched(
        orders={7}, statuses={"new", "in_progress"}, dashboard=True, newest=True, customers={ANNA}
    )


def test_a_move_between_inactive_statuses_leaves_the_dashboard_alone() -> None:
    t = touched_by(Change("orders", "update", order(7, "done"), order(7, "cancelled")))
    assert t == Touched(orders={7}, statuses={"done", "cancelled"}, customers={ANNA})


def test_an_edit_of_an_active_order_touches_its_lists() -> None:
    t = touched_by(Change("orders", "update", order(3, "in_progress"), order(3, "in_progress")))
    assert t == Touched(orders={3}, statuses={"in_progress"}, dashboard=True, customers={ANNA})


def test_insert_and_delete() -> None:
    assert touched_by(Change("orders", "insert", None, order(1, "new"))) == Touched(
        orders={1}, statuses={"new"}, dashboard=True, newest=True, customers={ANNA}
    )
    assert touched_by(Change("orders", "delete", order(2, "done"), None)) == Touched(
        orders={2}, statuses={"done"}, customers={ANNA}
    )


def test_without_the_old_row_every_list_is_touched() -> None:
    for change in (
        Change("orders", "update", None, order(4, "done")),
        Change("orders", "delete", {"id": "4", "status": None}, None),
    ):
        t = touched_by(change)
        assert t.orders == {4}
        assert t.statuses == {"new", "in_progress", "done", "cancelled"}
        assert t.dashboard
        assert t.newest


def test_an_id_change_touches_both_ids() -> None:
    t = touched_by(Change("orders", "update", order(1, "done"), order(2, "done")))
    assert t.orders == {1, 2}


def test_truncate_touches_every_key_of_the_table() -> None:
    t = touched_by(Change("orders", "truncate"))
    assert t.all_orders
    assert t.dashboard
    assert t.newest
    assert len(t.statuses) == 4
    assert touched_by(Change("models", "truncate")) == Touched(all_prices=True, catalogue=True)


def test_catalogue_changes_touch_their_price_families() -> None:
    assert touched_by(Change("models", "update", {"id": "5"}, {"id": "5"})) == Touched(
        price_models={5}, catalogue=True
    )
    assert touched_by(Change("materials", "delete", {"id": "2"}, None)) == Touched(
        price_materials={2}, catalogue=True
    )


def material(material_id: int, price: str, name: str = "Gold") -> dict[str, object]:
    return {
        "id": str(material_id),
        "name": name,
        "density_g_cm3": "13.000",
        "price_per_gram": price,
    }


def test_a_material_touches_its_prices_only_when_a_priced_column_changes() -> None:
    renamed = Change("materials", "update", material(2, "62.00"), material(2, "62.00", "Au 585"))
    assert touched_by(renamed) == Touched(catalogue=True)  # its name, not its prices
    repriced = Change("materials", "update", material(2, "62.00"), material(2, "63.00"))
    assert touched_by(repriced) == Touched(price_materials={2}, catalogue=True)
    # an outbox row without the watched columns it changed: assume the worst
    assert touched_by(Change("materials", "update", {"id": "2"}, {"id": "2"})) == Touched(
        price_materials={2}, catalogue=True
    )
    # no old image (REPLICA IDENTITY lost): assume the worst
    assert touched_by(Change("materials", "update", None, material(2, "62.00"))) == Touched(
        price_materials={2}, catalogue=True
    )


def test_any_pricing_rule_change_touches_every_price() -> None:
    for op in ("insert", "update", "delete", "truncate"):
        row = {"id": "1", "kind": "ring"}
        change = Change("pricing_rules", op, None if op == "insert" else row, row)
        assert touched_by(change) == Touched(all_prices=True)


def test_other_tables_touch_nothing() -> None:
    assert not touched_by(Change("scratch", "insert", None, {"id": "1"}))


def test_bound_swaps_many_ids_for_the_family() -> None:
    t = Touched(orders=set(range(11)), statuses={"new"})
    t.bound(10)
    assert t.all_orders
    assert not t.orders
    assert t.statuses == {"new"}
    small = Touched(orders={1, 2})
    small.bound(10)
    assert small.orders == {1, 2}
    assert not small.all_orders


def test_merging_is_a_union() -> None:
    a = touched_by(Change("orders", "update", order(1, "new"), order(1, "in_progress")))
    a.update(touched_by(Change("orders", "update", order(2, "done"), order(2, "cancelled"))))
    assert a.orders == {1, 2}
    assert a.statuses == {"new", "in_progress", "done", "cancelled"}


def test_a_probe_row_touches_its_probe_key_only() -> None:
    change = Change("cache_probe", "update", {"id": "3", "seq": "1"}, {"id": "3", "seq": "2"})
    assert touched_by(change) == Touched(probes={3})


def test_any_one_target_makes_a_change_worth_applying() -> None:
    # An empty `Touched` is how the listener knows a batch needs no Redis round trip.
    assert not Touched()
    for one in (
        Touched(orders={1}),
        Touched(all_orders=True),
        Touched(statuses={"done"}),
        Touched(dashboard=True),
        Touched(newest=True),
        Touched(price_models={1}),
        Touched(price_materials={1}),
        Touched(all_prices=True),
        Touched(probes={1}),
    ):
        assert one, one


def test_finishing_an_order_takes_it_off_the_dashboard() -> None:
    t = touched_by(Change("orders", "update", order(7, "in_progress"), order(7, "done")))
    assert t == Touched(
        orders={7}, statuses={"in_progress", "done"}, dashboard=True, customers={ANNA}
    )
    t = touched_by(Change("orders", "update", order(8, "new"), order(8, "cancelled")))
    assert t == Touched(
        orders={8}, statuses={"new", "cancelled"}, dashboard=True, newest=True, customers={ANNA}
    )


def test_a_burst_keeps_every_target_of_every_change() -> None:
    burst = Touched(
        orders={1},
        statuses={"new"},
        dashboard=True,
        newest=True,
        price_models={1},
        price_materials={1},
        all_prices=True,
        probes={1},
        all_orders=True,
    )
    burst.update(
        Touched(orders={2}, statuses={"done"}, price_models={2}, price_materials={2}, probes={2})
    )
    assert burst == Touched(
        orders={1, 2},
        statuses={"new", "done"},
        dashboard=True,
        newest=True,
        price_models={1, 2},
        price_materials={1, 2},
        all_prices=True,
        probes={1, 2},
        all_orders=True,
    )
    # and flags raised only by a later change are kept too
    later = Touched()
    later.update(Touched(all_orders=True, dashboard=True, newest=True, all_prices=True))
    assert later == Touched(all_orders=True, dashboard=True, newest=True, all_prices=True)


def test_bound_swaps_many_prices_for_every_price() -> None:
    many = Touched(price_models=set(range(6)), price_materials=set(range(5)), orders={1})
    many.bound(10)
    assert many == Touched(all_prices=True, orders={1})
    at_the_bound = Touched(price_models=set(range(5)), price_materials=set(range(5)))
    at_the_bound.bound(10)
    assert at_the_bound == Touched(price_models=set(range(5)), price_materials=set(range(5)))
    orders = Touched(orders=set(range(10)))
    orders.bound(10)
    assert orders == Touched(orders=set(range(10)))


def test_a_status_that_was_not_sent_counts_as_unknown() -> None:
    # An unchanged TOASTed value arrives as UNCHANGED, not text: not a status to trust.
    change = Change("orders", "update", order(4, "done"), {"id": "4", "status": UNCHANGED})
    t = touched_by(change)
    assert t.statuses == set(STATUSES)
    assert t.dashboard
    assert t.newest


def test_a_model_touches_its_prices_whatever_its_row_images_show() -> None:
    same = {"id": "5", "density_g_cm3": "1", "price_per_gram": "1"}
    assert touched_by(Change("models", "update", same, dict(same))) == Touched(
        price_models={5}, catalogue=True
    )
    # a material's insert has no old image to compare with
    inserted = Change("materials", "insert", None, material(2, "62.00"))
    assert touched_by(inserted) == Touched(price_materials={2}, catalogue=True)


def test_a_material_whose_new_image_lacks_a_priced_column_touches_its_prices() -> None:
    change = Change("materials", "update", material(2, "62.00"), {"id": "2", "name": "Gold"})
    assert touched_by(change) == Touched(price_materials={2}, catalogue=True)


def test_a_catalogue_change_without_any_id_touches_every_price() -> None:
    for table in ("models", "materials"):
        change = Change(table, "update", {"name": "a"}, {"name": "b"})
        assert touched_by(change) == Touched(all_prices=True, catalogue=True), table


def test_an_order_touches_its_customers_list() -> None:
    placed = touched_by(Change("orders", "insert", None, order(9, "new", "Bob")))
    assert placed.customers == {"Bob"}
    assert not placed.all_customers
    gone = touched_by(Change("orders", "delete", order(9, "new", "Bob"), None))
    assert gone.customers == {"Bob"}
    assert not gone.all_customers


def test_moving_an_order_to_another_customer_touches_both_lists() -> None:
    t = touched_by(Change("orders", "update", order(9, "new", "Bob"), order(9, "new", "{x} *")))
    assert t.customers == {"Bob", "{x} *"}
    assert not t.all_customers


def test_without_a_customer_every_customers_list_is_touched() -> None:
    no_old = {"id": "4", "status": "done"}
    for change in (
        Change("orders", "update", None, order(4, "done")),
        Change("orders", "update", no_old, order(4, "done")),
        Change("orders", "update", order(4, "done"), {"id": "4", "status": "done"}),
        Change("orders", "update", order(4, "done"), {**order(4, "done"), "customer": UNCHANGED}),
        Change("orders", "delete", no_old, None),
        Change("orders", "insert", None, no_old),
    ):
        t = touched_by(change)
        assert t.all_customers, change
        assert not t.customers, change
    # the statuses are known: only the customers' lists are unknown
    t = touched_by(Change("orders", "update", no_old, order(4, "done")))
    assert t.statuses == {"done"}
    assert not t.dashboard


def test_truncating_orders_touches_every_customers_list() -> None:
    assert touched_by(Change("orders", "truncate")).all_customers


def test_the_catalogue_is_touched_by_models_and_materials_only() -> None:
    for table in ("models", "materials"):
        for op in ("insert", "update", "delete", "truncate"):
            row = {"id": "3", "name": "x"}
            change = Change(table, op, None if op == "insert" else row, row)
            assert touched_by(change).catalogue, (table, op)
    for change in (
        Change("pricing_rules", "update", {"id": "1"}, {"id": "1"}),
        Change("orders", "insert", None, order(1, "new")),
        Change("cache_probe", "update", {"id": "1"}, {"id": "1"}),
    ):
        assert not touched_by(change).catalogue, change


def test_watched_columns_a_source_names_decide_a_materials_prices() -> None:
    ids = {"id": "2"}, {"id": "2"}
    renamed = Change("materials", "update", *ids, changed=frozenset({"name"}))
    assert touched_by(renamed) == Touched(catalogue=True)
    for priced in ("price_per_gram", "density_g_cm3"):
        change = Change("materials", "update", *ids, changed=frozenset({"name", priced}))
        assert touched_by(change) == Touched(price_materials={2}, catalogue=True), priced
    # an id that changed touches both ids' prices whatever columns changed
    moved = Change("materials", "update", {"id": "2"}, {"id": "3"}, changed=frozenset({"name"}))
    assert touched_by(moved) == Touched(price_materials={2, 3}, catalogue=True)
    unknown = Change("materials", "update", {"id": None}, {"id": None}, changed=frozenset())
    assert touched_by(unknown) == Touched(all_prices=True, catalogue=True)


def test_the_new_targets_make_a_change_worth_applying_and_merge() -> None:
    for one in (Touched(customers={"a"}), Touched(all_customers=True), Touched(catalogue=True)):
        assert one, one
        merged = Touched()
        merged.update(one)
        assert merged == one
    both = Touched(customers={"a"})
    both.update(Touched(customers={"b"}))
    assert both.customers == {"a", "b"}
    # a flag an earlier change raised stays raised
    raised = Touched(all_customers=True, catalogue=True)
    raised.update(Touched())
    assert raised == Touched(all_customers=True, catalogue=True)


def test_bound_swaps_many_customers_for_every_customer() -> None:
    many = Touched(customers={str(i) for i in range(11)}, orders={1})
    many.bound(10)
    assert many == Touched(all_customers=True, orders={1})
    at_the_bound = Touched(customers={str(i) for i in range(10)})
    at_the_bound.bound(10)
    assert at_the_bound == Touched(customers={str(i) for i in range(10)})


def test_a_later_change_of_another_table_keeps_the_catalogue_touched() -> None:
    burst = Touched()
    add_change(burst, Change("models", "update", {"id": "1"}, {"id": "1"}))
    add_change(burst, Change("orders", "insert", None, order(2, "done")))
    assert burst.catalogue
    assert burst.customers == {ANNA}
