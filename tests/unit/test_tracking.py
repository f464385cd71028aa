"""The pure parts of tracked near hits: which reads may be marked tracked (the message log),
which keys a copy rests on, the setting, and a cluster keeping hits checked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.nearcache import NearCache, read_names
from api.settings import ApiSettings
from api.tracking import MessageLog, TrackingChannel, Watch
from mescache.keys import KeySchema

KEYS = KeySchema()


def test_a_read_with_no_message_since_is_untouched() -> None:
    log = MessageLog()
    log.note(frozenset({"a"}))
    assert log.untouched_since(log.seq, ("a",))


def test_a_message_naming_one_of_the_reads_keys_since_it_was_sent_touches_it() -> None:
    log = MessageLog()
    sent = log.seq
    log.note(frozenset({"other"}))
    assert log.untouched_since(sent, ("a", "b"))
    log.note(frozenset({"x", "b"}))
    assert not log.untouched_since(sent, ("a", "b"))
    assert log.untouched_since(log.seq, ("a", "b"))  # a read sent after it is not


def test_a_message_before_the_read_was_sent_does_not_touch_it() -> None:
    log = MessageLog()
    log.note(frozenset({"a"}))
    sent = log.seq
    log.note(frozenset({"z"}))
    assert log.untouched_since(sent, ("a",))


def test_a_flush_touches_every_read_in_flight() -> None:
    log = MessageLog()
    sent = log.seq
    log.note(None)
    assert not log.untouched_since(sent, ("a",))


def test_a_read_older_than_the_messages_remembered_is_touched() -> None:
    log = MessageLog(size=2)
    sent = log.seq
    for name in ("x", "y", "z"):
        log.note(frozenset({name}))
    assert not log.untouched_since(sent, ("a",))  # message 1 is forgotten: cannot tell
    assert log.untouched_since(1, ("a",))  # messages 2 and 3 are remembered


def test_a_family_members_copy_rests_on_its_value_fences_and_token() -> None:
    page = KEYS.status_page("new", None, 50)
    assert page.token is not None
    assert read_names(page) == (page.name, *page.fences, page.token)
    price = KEYS.price(3, 4, "size=52")
    assert len(read_names(price)) == 2 + len(price.fences)
    dashboard = KEYS.dashboard()
    assert read_names(dashboard) == (dashboard.name, dashboard.fence)


def test_checked_mode_serves_no_tracked_hit_and_sends_checks_through_the_main_store() -> None:
    near = NearCache(1, 1 << 20)
    near.keep("k", b"t", b"body", 1e12)
    assert near.watch("k") is None
    assert near.tracked_hit("k") is None
    assert near.counts.fallbacks == 0


def _channel() -> TrackingChannel:
    return TrackingChannel("redis://127.0.0.1:1/0", 1.0, "beat", bound=0.05, beat=0.01)


def test_a_channel_never_started_proves_nothing_and_marks_nothing() -> None:
    channel = _channel()
    near = NearCache(1, 1 << 20, channel)
    assert not channel.proven_now
    watch = near.watch("k")
    assert watch == Watch(None, 0, 0)
    near.keep("k", b"t", b"body", 1e12, watch=watch, names=("k",))
    assert near.lookup("k") is not None
    assert near.tracked_hit("k") is None  # kept, checked on every read


def test_a_flush_message_drops_every_copy_and_a_key_message_its_own() -> None:
    near = NearCache(1, 1 << 20, _channel())
    near.keep("a", b"t", b"body", 1e12)
    near.keep("b", b"t", b"body", 1e12)
    near.invalidated(frozenset({"a"}))  # not tracked: only its marks are indexed
    assert len(near) == 2
    near.invalidated(None)
    assert len(near) == 0
    assert near.size == 0


async def test_on_a_cluster_the_channel_is_not_built_and_hits_stay_checked() -> None:
    channel = TrackingChannel("redis+cluster://127.0.0.1:1", 1.0, "beat", bound=0.05, beat=0.01)
    await channel.start()
    try:
        assert channel.supported is False
        assert not channel.proven_now
        assert channel.watch().store is None
    finally:
        await channel.close()


def test_the_near_cache_setting_defaults_to_checked_and_refuses_other_modes() -> None:
    base = {"database_url": "postgresql://db/x", "redis_url": "redis://r/0"}
    assert ApiSettings(**base).near_cache == "checked"  # type: ignore[arg-type]
    assert ApiSettings(**base, near_cache="tracked").near_cache == "tracked"  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ApiSettings(**base, near_cache="sometimes")  # type: ignore[arg-type]
