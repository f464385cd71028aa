"""The REDIS_URL forms mescache.redisconn accepts, and the one-line refusals of others."""

from __future__ import annotations

import pytest

from mescache.redisconn import BadRedisUrl, RedisTarget, parse_redis_url


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380/2", "unix:///run/redis.sock?db=3"],
)
def test_single_server_urls_pass_through(url: str) -> None:
    assert parse_redis_url(url) == RedisTarget("single", url)


def test_a_cluster_url_lists_its_startup_nodes() -> None:
    target = parse_redis_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001")
    assert target.kind == "cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (target.username, target.password, target.tls) == ("app", "s@cret", True)


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    target = parse_redis_url("redis+sentinel://:pw@s1:26379,[::1]:26380/mes/4")
    assert target.kind == "sentinel"
    assert target.nodes == (("s1", 26379), ("::1", 26380))
    assert (target.master, target.db, target.password, target.tls) == ("mes", 4, "pw", False)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379", "must start with"),
        ("127.0.0.1:6379", "must start with"),
        ("redis+cluster://", "at least one host:port"),
        ("redis+cluster://a:1/0", "database 0 only"),
        ("redis+cluster://a:notaport", "host:port"),
        ("redis+sentinel://a:26379", "master's name"),
        ("redis+sentinel://a:26379/mes/x", "master's name"),
    ],
)
def test_other_urls_are_refused_with_a_message_that_never_repeats_them(url: str, says: str) -> None:
    with pytest.raises(BadRedisUrl, match=says) as caught:
        parse_redis_url(url + "?password=hunter2")
    assert "hunter2" not in str(caught.value)
