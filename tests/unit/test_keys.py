"""The key schema names what the design notes name, under an optional prefix."""

from __future__ import annotations

from mescache.keys import KeySchema


def test_default_names_follow_the_contract() -> None:
    keys = KeySchema()
    assert keys.dashboard().name == "orders:dashboard"
    assert keys.new_orders().name == "orders:new"
    assert keys.order(42).name == "order:42"
    assert keys.status_family("new") == "orders:status:new"
    page = keys.status_page("new", None, 50)
    assert page.name.startswith("orders:status:new:")
    assert page.tag == "orders:status:new"


def test_pages_share_their_family_fence_and_keys_have_their_own() -> None:
    keys = KeySchema()
    first, later = keys.status_page("done", None, 50), keys.status_page("done", 900, 50)
    assert first.name != later.name
    assert first.fence == later.fence == keys.family_fence("orders:status:done")
    assert keys.order(1).fence != keys.order(2).fence
    assert keys.order(1).lease != keys.order(1).fence != keys.order(1).name


def test_prefix_applies_to_every_name() -> None:
    keys = KeySchema("shop1:")
    made = [keys.dashboard(), keys.new_orders(), keys.order(1), keys.status_page("new", 5, 10)]
    for key in made:
        for name in (key.name, key.fence, key.lease, key.tag or "shop1:"):
            assert name.startswith("shop1:")
    assert keys.status_family("done") == "shop1:orders:status:done"
    assert keys.price_family_of_model(3) == "shop1:price:model:3"
    assert keys.namespace_pattern() == "shop1:*"


def test_a_price_is_fenced_by_and_listed_in_each_of_its_three_families() -> None:
    keys = KeySchema("p:")
    price = keys.price(5, 2, "size=17.5")
    assert price.name == "p:price:5:2:size=17.5"
    assert price.tags == ("p:price:model:5", "p:price:material:2", "p:price:all")
    assert price.fences == tuple(keys.family_fence(t) for t in price.tags)
    other = keys.price(5, 3, "size=17.5")
    assert other.fences[0] == price.fences[0]
    assert other.fences[1] != price.fences[1]


def test_the_price_request_counts_outlive_a_flush_and_prices_do_not() -> None:
    keys = KeySchema("p:")
    assert keys.outlives_flush(keys.price_requests())
    assert not keys.outlives_flush(keys.price(1, 2, "size=base").name)
    assert not keys.outlives_flush(keys.all_prices())


def test_order_names_spell_the_same_names_as_the_order_key() -> None:
    for schema in (KeySchema(), KeySchema("mes:")):
        key = schema.order(42)
        assert schema.order_names(42) == (key.name, key.fence, key.lease)
