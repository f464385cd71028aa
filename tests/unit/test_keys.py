"""The key schema names what the design notes name, under an optional prefix, with every
key a script touches in one Redis Cluster hash slot."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from redis.crc import key_slot

from mescache.keys import (
    COMPANION,
    KEPT,
    TAG_SET,
    UNKNOWN,
    CacheKey,
    KeyRef,
    KeySchema,
    check_prefix,
    decode_name,
    encode_name,
)

# A customer's name holding what a key must not take raw: braces (the hash tag), SCAN's
# special characters, a colon, a '#' (companions), a percent sign, spaces, non-ASCII.
ODD = "Zoë {VIP} *?[x]: 50% #1 / \\ shop"


def _slot(name: str) -> int:
    return key_slot(name.encode())


def _names(key: CacheKey) -> list[str]:
    return [key.name, key.lease, *key.fences, *key.tags, *([key.token] if key.token else [])]


def test_default_names_follow_the_contract() -> None:
    keys = KeySchema()
    assert keys.dashboard().name == "orders:{dashboard}"
    assert keys.new_orders().name == "orders:{new}"
    assert keys.order(42).name == "order:{42}"
    assert keys.status_family("new") == "orders:{status:new}"
    page = keys.status_page("new", None, 50)
    assert page.name == "orders:{status:new}:page:first:50"
    assert page.tag == "orders:{status:new}"
    assert keys.price(5, 2, "size=17").name == "price:{model:5}:2:size=17"


def test_pages_share_their_family_fence_and_keys_have_their_own() -> None:
    keys = KeySchema()
    first, later = keys.status_page("done", None, 50), keys.status_page("done", 900, 50)
    assert first.name != later.name
    assert first.fence == later.fence == keys.family_fence(keys.status_family("done"))
    assert keys.order(1).fence != keys.order(2).fence
    assert keys.order(1).lease != keys.order(1).fence != keys.order(1).name


def test_only_family_members_keep_a_token() -> None:
    keys = KeySchema()
    for own in (keys.order(1), keys.dashboard(), keys.new_orders(), keys.probe(2)):
        assert own.token is None
        assert own.fences == (f"{own.name}#fence",)
    for member in (keys.status_page("new", None, 50), keys.price(1, 2, "size=base")):
        assert member.token == f"{member.name}#token"


def test_prefix_applies_to_every_name() -> None:
    keys = KeySchema("shop1:")
    made = [keys.dashboard(), keys.new_orders(), keys.order(1), keys.status_page("new", 5, 10)]
    made.append(keys.price(3, 4, "size=base"))
    for key in made:
        for name in _names(key):
            assert name.startswith("shop1:")
    assert keys.status_family("done") == "shop1:orders:{status:done}"
    assert keys.price_family_of_model(3) == "shop1:price:{model:3}"
    assert keys.namespace_pattern() == "shop1:*"


@pytest.mark.parametrize("prefix", ["", "mes:"])
def test_every_key_a_script_touches_shares_one_hash_slot(prefix: str) -> None:
    keys = KeySchema(prefix)
    made = [
        keys.order(17),
        keys.dashboard(),
        keys.new_orders(),
        keys.probe(3),
        keys.status_page("in_progress", 900, 50),
        keys.price(5, 2, "size=17.5"),
        keys.customer_page(ODD, 900, 50),
        keys.catalogue(),
    ]
    for key in made:
        assert len({_slot(n) for n in _names(key)}) == 1, key
    assert _slot(keys.pending(17)) == _slot(keys.order(17).name)
    triple = keys.order_names(17)
    assert triple == (keys.order(17).name, keys.order(17).fence, keys.order(17).lease)


def test_load_spreads_over_slots() -> None:
    keys = KeySchema()
    orders = {_slot(keys.order(i).name) for i in range(1, 101)}
    models = {_slot(keys.price(m, 1, "size=base").name) for m in range(1, 101)}
    statuses = {_slot(keys.status_family(s)) for s in ("new", "in_progress", "done", "cancelled")}
    assert len(orders) > 90
    assert len(models) > 90
    assert len(statuses) == 4


def test_a_price_is_fenced_by_and_listed_in_each_of_its_three_families() -> None:
    keys = KeySchema("p:")
    price = keys.price(5, 2, "size=17.5")
    assert price.tags == (
        keys.price_family_of_model(5),
        keys.price_family_of_material(2, 5),
        keys.all_prices(5),
    )
    assert price.fences == tuple(keys.family_fence(t) for t in price.tags)
    other = keys.price(5, 3, "size=17.5")
    assert other.fences[0] == price.fences[0]
    assert other.fences[1] != price.fences[1]
    assert other.fences[2] == price.fences[2]
    elsewhere = keys.price(6, 2, "size=17.5")
    assert set(elsewhere.fences).isdisjoint(price.fences)  # each model's slot has its own


def test_the_price_request_counts_outlive_a_flush_and_prices_do_not() -> None:
    keys = KeySchema("p:")
    assert keys.outlives_flush(keys.price_requests())
    assert keys.outlives_flush(keys.price_requests_halved())
    assert keys.outlives_flush(keys.master_mark())
    assert keys.outlives_flush(keys.consistency())
    assert not keys.outlives_flush(keys.price(1, 2, "size=base").name)
    assert not keys.outlives_flush(keys.all_prices(1))


def test_order_names_spell_the_same_names_as_the_order_key() -> None:
    for schema in (KeySchema(), KeySchema("mes:")):
        key = schema.order(42)
        assert schema.order_names(42) == (key.name, key.fence, key.lease)


@pytest.mark.parametrize("prefix", ["{x}", "a*", "b?", "c[", "d\\"])
def test_a_prefix_that_would_pick_the_slot_or_break_a_scan_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"^KEY_PREFIX must not contain any of \{ \}") as refused:
        check_prefix(prefix)
    assert str(refused.value) == "KEY_PREFIX must not contain any of { } * ? [ ] \\"
    for fine in ("mes:", "MES_X:", "shop-1/"):
        assert check_prefix(fine) == fine


def _every_kind(keys: KeySchema) -> list[CacheKey]:
    return [
        keys.dashboard(),
        keys.new_orders(),
        keys.order(42),
        keys.probe(3),
        keys.status_page("new", None, 50),
        keys.status_page("done", 900, 20),
        keys.price(5, 2, "size=17.5"),
        keys.customer_page("Anna K.", None, 50),
        keys.customer_page(ODD, 900, 20),
        keys.catalogue(),
    ]


def test_every_value_name_reads_back_as_the_key_it_was_built_as() -> None:
    for keys in (KeySchema(), KeySchema("p:")):
        built = _every_kind(keys)
        assert len({key.name for key in built}) == len(built)
        for key in built:
            ref = keys.classify(key.name)
            assert ref.key == key, key
            for companion in (*key.fences, key.lease, *([key.token] if key.token else [])):
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
    assert keys.classify(keys.all_prices(1)) == KeyRef(TAG_SET, {})
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
        own = [keys.changes_channel(), keys.write_stream(), keys.dead_letters(), keys.master_mark()]
        own += [keys.price_requests(), keys.pending(1), keys.all_prices(1)]
        assert len(set(own)) == len(own)
        assert all(name.startswith(keys.prefix) for name in own)


def test_a_customers_name_is_encoded_to_stay_inside_its_hash_tag() -> None:
    encoded = encode_name(ODD)
    assert set(encoded) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~%"
    )
    assert decode_name(encoded) == ODD
    assert encode_name("Anna K.") == "Anna%20K."
    keys = KeySchema("p:")
    page = keys.customer_page(ODD, None, 50)
    assert page.name == f"p:orders:{{customer:{encoded}}}:page:first:50"
    assert page.tags == (keys.customer_family(ODD),)
    assert page.fence == keys.family_fence(keys.customer_family(ODD))
    assert keys.customer_page(ODD, 7, 20).name.endswith(":page:7:20")
    # the hash tag is the whole encoded name: one slot per customer, whatever it holds
    assert _slot(page.name) == _slot(f"{{customer:{encoded}}}")
    assert keys.customer_family("a") != keys.customer_family("A")
    ref = keys.classify(keys.customer_page(ODD, 7, 20).name)
    assert ref == KeyRef(
        "customer_page",
        {"customer": encoded, "start": "7", "limit": "20"},
        keys.customer_page(ODD, 7, 20),
    )
    assert keys.classify(keys.customer_family(ODD)) == KeyRef(TAG_SET, {})
    assert keys.classify(keys.catalogue().name) == KeyRef("catalogue", {}, keys.catalogue())


def test_a_customer_page_named_otherwise_than_its_builder_would_is_unknown() -> None:
    keys = KeySchema()
    for name in (
        "orders:{customer:%41nna}:page:first:50",  # 'A' encoded: not how the schema spells it
        "orders:{customer:%ff}:page:first:50",  # lower-case hex
        "orders:{customer:%FF}:page:first:50",  # not UTF-8
        "orders:{customer:Anna K.}:page:first:50",  # a raw space
    ):
        assert keys.classify(name) == KeyRef(UNKNOWN, {}), name


def test_the_customers_pattern_matches_every_customers_keys_and_nothing_else() -> None:
    for keys in (KeySchema(), KeySchema("p:")):
        for name in _names(keys.customer_page(ODD, None, 50)):
            assert fnmatchcase(name, keys.customers_pattern()), name
        names = [key.name for key in _every_kind(keys)]
        assert [n for n in names if fnmatchcase(n, keys.customers_pattern())] == [
            keys.customer_page("Anna K.", None, 50).name,
            keys.customer_page(ODD, 900, 20).name,
        ]


def test_a_heartbeat_key_carries_its_hash_tag_on_a_cluster() -> None:
    keys = KeySchema("shop:")
    assert keys.near_beat("a1b2") == "shop:cache:near-beat:a1b2"
    tagged = keys.near_beat("a1b2", "17")
    assert tagged == "shop:cache:near-beat:{17}:a1b2"
    assert key_slot(tagged.encode()) == key_slot(b"17")  # the tag alone picks the slot
