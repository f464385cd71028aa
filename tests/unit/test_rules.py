"""The rule, as a pure function: change -> the targets it touches."""

from __future__ import annotations

from mescache.rules import Change, Touched, touched_by


def order(order_id: int, status: str) -> dict[str, object]:
    return {"id": str(order_id), "status": status, "quantity": "1"}


def test_a_move_from_new_to_in_progress_touches_exactly_its_keys() -> None:
    t = touched_by(Change("orders", "update", order(7, "new"), order(7, "in_progress")))
    assert t == Touched(orders={7}, statuses={"new", "in_progress"}, dashboard=True, newest=True)


def test_a_move_between_inactive_statuses_leaves_the_dashboard_alone() -> None:
    t = touched_by(Change("orders", "update", order(7, "done"), order(7, "cancelled")))
    assert t == Touched(orders={7}, statuses={"done", "cancelled"})


def test_an_edit_of_an_active_order_touches_its_lists() -> None:
    t = touched_by(Change("orders", "update", order(3, "in_progress"), order(3, "in_progress")))
    assert t == Touched(orders={3}, statuses={"in_progress"}, dashboard=True)


def test_insert_and_delete() -> None:
    assert touched_by(Change("orders", "insert", None, order(1, "new"))) == Touched(
        orders={1}, statuses={"new"}, dashboard=True, newest=True
    )
    assert touched_by(Change("orders", "delete", order(2, "done"), None)) == Touched(
        orders={2}, statuses={"done"}
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
    assert touched_by(Change("models", "truncate")) == Touched(all_prices=True)


def test_catalogue_changes_touch_their_price_families() -> None:
    assert touched_by(Change("models", "update", {"id": "5"}, {"id": "5"})) == Touched(
        price_models={5}
    )
    assert touched_by(Change("materials", "delete", {"id": "2"}, None)) == Touched(
        price_materials={2}
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
    assert not touched_by(renamed)
    repriced = Change("materials", "update", material(2, "62.00"), material(2, "63.00"))
    assert touched_by(repriced) == Touched(price_materials={2})
    # the outbox sends ids only: it filtered already, so an update it sends is a real one
    assert touched_by(Change("materials", "update", {"id": "2"}, {"id": "2"})) == Touched(
        price_materials={2}
    )
    # no old image (REPLICA IDENTITY lost): assume the worst
    assert touched_by(Change("materials", "update", None, material(2, "62.00"))) == Touched(
        price_materials={2}
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
