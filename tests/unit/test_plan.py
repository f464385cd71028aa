"""The plan, as a pure function: a batch's targets -> every Redis action, keys named."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from mescache.keys import KeySchema
from mescache.orders import Order, dump_order
from mescache.rules import (
    Change,
    OrderUpdate,
    Plan,
    Refresh,
    Touched,
    add_change,
    needs_model_ids,
    plan,
)
from mescache.settings import CacheSettings
from mescache.store import lsn_version

SETTINGS = CacheSettings(
    database_url="postgresql://test@127.0.0.1/db",
    redis_url="redis://127.0.0.1:1/0",
    ttl_order=301,
    ttl_dashboard=61,
)
KEYS = KeySchema("shop:")


def names(key_name: str) -> tuple[str, str, str]:
    return key_name, f"{key_name}#fence", f"{key_name}#lease"


def family(name: str) -> tuple[str, str]:
    return name, f"{name}#fence"


def order(order_id: int) -> Order:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return Order(
        id=order_id,
        customer="Anna K.",
        model_id=1,
        material_id=2,
        quantity=1,
        params={},
        total_price=Decimal("10.00"),
        status="new",
        created_at=at,
        updated_at=at,
    )


def test_nothing_touched_plans_nothing() -> None:
    assert plan(Touched(), KEYS, SETTINGS) == Plan()


def test_each_target_names_its_keys_under_the_prefix() -> None:
    touched = Touched(
        orders={7},
        statuses={"new", "done"},
        dashboard=True,
        newest=True,
        catalogue=True,
        probes={4, 3},
        customers={"Bob", "{x} *"},
        price_models={9, 5},
    )
    actions = plan(touched, KEYS, SETTINGS)
    assert actions.flush == []
    assert actions.refresh == []
    assert actions.invalidate == [
        names("shop:order:{7}"),
        names("shop:orders:{new}"),
        names("shop:orders:{dashboard}"),
        names("shop:catalogue:{names}"),
        names("shop:probe:{3}"),
        names("shop:probe:{4}"),
    ]
    assert actions.families == [
        family("shop:orders:{status:done}"),
        family("shop:orders:{status:new}"),
        family("shop:orders:{customer:Bob}"),
        family("shop:orders:{customer:%7Bx%7D%20%2A}"),
        family("shop:price:{model:5}"),
        family("shop:price:{model:9}"),
    ]


def test_whole_families_are_flushed_by_pattern() -> None:
    everything = Touched(all_orders=True, all_customers=True, customers={"Bob"})
    actions = plan(everything, KEYS, SETTINGS)
    assert actions.flush == ["shop:order:{*", "shop:orders:{customer:*"]
    assert actions.families == []  # every customer's list goes: no one family to move
    assert plan(Touched(all_orders=True), KEYS, SETTINGS).flush == ["shop:order:{*"]
    assert plan(Touched(all_customers=True), KEYS, SETTINGS).flush == ["shop:orders:{customer:*"]


def test_material_and_rule_changes_move_families_in_every_models_slot() -> None:
    materials = Touched(price_materials={3, 2})
    assert needs_model_ids(materials)
    assert plan(materials, KEYS, SETTINGS, model_ids=[5, 6]).families == [
        family("shop:price:{model:5}:material:2"),
        family("shop:price:{model:5}:material:3"),
        family("shop:price:{model:6}:material:2"),
        family("shop:price:{model:6}:material:3"),
    ]
    rules = Touched(all_prices=True, price_materials={2})
    assert needs_model_ids(rules)
    assert plan(rules, KEYS, SETTINGS, model_ids=[5, 6]).families == [
        family("shop:price:{model:5}:all"),
        family("shop:price:{model:6}:all"),
    ]
    assert plan(materials, KEYS, SETTINGS).families == []  # no models: no price cached
    assert not needs_model_ids(Touched(price_models={5}, orders={1}, dashboard=True))
    assert plan(Touched(price_models={5}), KEYS, SETTINGS, model_ids=[6]).families == [
        family("shop:price:{model:5}")
    ]


def test_refresh_mode_writes_orders_from_their_images_and_invalidates_the_rest() -> None:
    touched = Touched(orders={1, 2, 3})
    images = {1: (order(1), 0x2A), 2: (None, 0x2B)}  # 2 deleted; 3 has no image
    actions = plan(touched, KEYS, SETTINGS, images=images)
    assert actions.refresh == [Refresh(KEYS.order(1), dump_order(order(1)), 301, lsn_version(0x2A))]
    assert sorted(actions.invalidate) == [names("shop:order:{2}"), names("shop:order:{3}")]
    # without images (invalidate mode) every order is invalidated
    assert sorted(plan(touched, KEYS, SETTINGS).invalidate) == [
        names("shop:order:{1}"),
        names("shop:order:{2}"),
        names("shop:order:{3}"),
    ]


def test_a_recomputed_dashboard_is_refreshed_instead_of_invalidated() -> None:
    refreshed = plan(Touched(dashboard=True), KEYS, SETTINGS, dashboard=b"[dashboard]")
    assert refreshed.refresh == [Refresh(KEYS.dashboard(), b"[dashboard]", 61, None)]
    assert refreshed.invalidate == []
    # bytes the batch did not ask for change nothing
    assert plan(Touched(newest=True), KEYS, SETTINGS, dashboard=b"x") == Plan(
        invalidate=[names("shop:orders:{new}")]
    )


def test_an_order_update_read_straight_from_the_row_touches_what_its_change_does() -> None:
    fast = Touched()
    add_change(fast, OrderUpdate(7, 8, "new", "done", "Anna", "Bob"))
    general = Touched()
    old = {"id": "7", "status": "new", "customer": "Anna"}
    add_change(
        general, Change("orders", "update", old, {"id": "8", "status": "done", "customer": "Bob"})
    )
    assert fast == general
    assert fast == Touched(
        orders={7, 8},
        statuses={"new", "done"},
        dashboard=True,
        newest=True,
        customers={"Anna", "Bob"},
    )
