"""mescache.resp packs commands into exactly the bytes redis-py's own packer makes, and
leaves to redis-py what it cannot pack the same way; plain TCP clients use it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Connection

from mescache import resp
from mescache.redisconn import PackingConnection, make_redis

ARGS = st.one_of(st.text(max_size=40), st.binary(max_size=40), st.integers(-(2**70), 2**70))
NAMES = st.one_of(
    st.text(min_size=1, max_size=12).filter(lambda name: name.split() == [name]),
    st.binary(min_size=1, max_size=12).filter(lambda name: b" " not in name),
)


def redis_py(args: tuple[Any, ...]) -> bytes:
    return b"".join(Connection().pack_command(*args))


@settings(database=None, deadline=None, max_examples=500)
@given(NAMES, st.lists(ARGS, max_size=30))
def test_packs_what_redis_py_packs(name: str | bytes, rest: list[object]) -> None:
    args = (name, *rest)
    assert resp.pack(args) == redis_py(args)


def test_a_command_of_many_keys_packs_the_same() -> None:
    args = ("EVALSHA", "a" * 40, 3000, *(f"order:{{{i}}}#fence" for i in range(3000)), b"\xff")
    assert resp.pack(args) == redis_py(args)


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("CONFIG GET", "maxmemory"),  # redis-py splits the name
        ("CONFIG\tGET", "maxmemory"),
        (b"CONFIG GET", b"maxmemory"),
        ("",),
        ("SET", "k", 1.5),
        ("SET", "k", True),
        ("SET", "k", memoryview(b"v")),
        ("SET", "k", None),
    ],
)
def test_leaves_other_arguments_to_redis_py(args: tuple[object, ...]) -> None:
    assert resp.pack(args) is None


def test_the_connection_falls_back_to_redis_py_for_those() -> None:
    args = ("SET", "k", 1.5)
    assert PackingConnection().pack_command(*args) == Connection().pack_command(*args)
    assert PackingConnection().pack_command("SET", "k", "v") == [redis_py(("SET", "k", "v"))]


def test_another_encoding_is_left_to_redis_py() -> None:
    connection = PackingConnection(encoding="latin-1")
    args = ("SET", "k", "é")
    assert connection.pack_command(*args) == Connection(encoding="latin-1").pack_command(*args)


@pytest.mark.parametrize(
    ("url", "packing"),
    [
        ("redis://127.0.0.1:1/0", True),
        ("rediss://127.0.0.1:1/0", False),  # TLS keeps its own connection class
        ("unix:///tmp/none.sock?db=0", False),
    ],
)
def test_plain_tcp_clients_pack_with_it(url: str, packing: bool) -> None:
    client = make_redis(url, 1.0, 2)
    assert (client.connection_pool.connection_class is PackingConnection) is packing
