"""The key schema names what the design notes name, under an optional prefix."""

from __future__ import annotations

from fnmatch import fnmatchcase

from mescache.keys import COMPANION, KEPT, TAG_SET, UNKNOWN, CacheKey, KeyRef, KeySchema


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


def _every_kind(keys: KeySchema) -> list[CacheKey]:
    return [
        keys.dashboard(),
        keys.new_orders(),
        keys.order(42),
        keys.probe(3),
        keys.status_page("new", None, 50),
        keys.status_page("done", 900, 20),
        keys.price(5, 2, "size=17.5"),
    ]


def test_every_key_is_fenced_by_its_namespaces_epoch() -> None:
    # A flush moves the epoch: a key built without it would let an old fill land after.
    for keys in (KeySchema(), KeySchema("p:")):
        for key in _every_kind(keys):
            assert key.epoch == keys.epoch(), key
    assert KeySchema("p:").epoch() != KeySchema().epoch()
    assert KeySchema("p:").epoch().startswith("p:")


def test_every_value_name_reads_back_as_the_key_it_was_built_as() -> None:
    for keys in (KeySchema(), KeySchema("p:")):
        built = _every_kind(keys)
        assert len({key.name for key in built}) == len(built)
        for key in built:
            ref = keys.classify(key.name)
            assert ref.key == key, key
            for companion in (*key.fences, key.lease, key.epoch):
                assert keys.classify(companion).kind == COMPANION, companion
            for tag in key.tags:
                assert keys.classify(tag).kind == TAG_SET, tag
        assert keys.classify(keys.order(7).name) == KeyRef("order", {"id": "7"}, keys.order(7))
        page = keys.status_page("in_progress", 900, 20)
        assert keys.classify(page.name).params == {
            "status": "in_progress",
            "start": "900",
            "limit": "20",
        }
        price = keys.classify(keys.price(5, 2, "size=base").name)
        assert price.params == {"model": "5", "material": "2", "params": "size=base"}


def test_a_key_of_no_family_is_its_own_fence_and_tag_set_of_none() -> None:
    keys = KeySchema("p:")
    for key in (keys.dashboard(), keys.order(1), keys.probe(1)):
        assert key.fences == (keys.family_fence(key.name),)
        assert key.tags == ()
        assert key.tag is None
    page = keys.status_page("done", None, 50)
    assert page.fence == keys.family_fence(keys.status_family("done"))
    assert page.tag == keys.status_family("done")


def test_names_outside_the_namespace_or_of_no_known_kind_are_unknown() -> None:
    keys, other = KeySchema("p:"), KeySchema("q:")
    assert keys.classify(other.order(1).name) == KeyRef(UNKNOWN, {})
    assert keys.classify(keys.order(1).name + "x") == KeyRef(UNKNOWN, {})
    assert keys.classify(keys.prefix + "scratch") == KeyRef(UNKNOWN, {})
    assert keys.classify(keys.order(1).lease) == KeyRef(COMPANION, {})
    assert keys.classify(keys.all_prices()) == KeyRef(TAG_SET, {})
    for kept in (keys.pending(1), keys.write_stream(), keys.dead_letters(), keys.price_requests()):
        assert keys.classify(kept) == KeyRef(KEPT, {}), kept
        assert keys.outlives_flush(kept)
    assert not keys.outlives_flush(other.write_stream())
    assert not keys.outlives_flush(keys.order(1).name)


def test_patterns_match_what_they_stand_for() -> None:
    for keys in (KeySchema(), KeySchema("p:")):
        names = [key.name for key in _every_kind(keys)]
        assert all(fnmatchcase(n, keys.namespace_pattern()) for n in names)
        orders = [n for n in names if fnmatchcase(n, keys.orders_pattern())]
        assert orders == [keys.order(42).name]
        assert fnmatchcase(keys.order(42).fence, keys.orders_pattern())
        assert fnmatchcase(keys.pending(42), keys.pending_pattern())
        assert not any(fnmatchcase(n, keys.pending_pattern()) for n in names)
    assert not fnmatchcase(KeySchema().order(1).name, KeySchema("p:").namespace_pattern())


def test_the_change_channel_and_the_streams_are_names_of_their_own() -> None:
    for keys in (KeySchema(), KeySchema("p:")):
        own = [keys.changes_channel(), keys.write_stream(), keys.dead_letters(), keys.epoch()]
        own += [keys.price_requests(), keys.pending(1), keys.all_prices()]
        assert len(set(own)) == len(own)
        assert all(name.startswith(keys.prefix) for name in own)
