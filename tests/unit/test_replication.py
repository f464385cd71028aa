"""Tests of the CopyBoth framing (XLogData, keepalive, standby status) and the LSN helpers."""

import json
import re
import struct
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_listener.errors import DecodeError
from cdc_listener.pgoutput import Commit, decode
from cdc_listener.replication import (
    Keepalive,
    XLogData,
    format_lsn,
    parse_copy_data,
    parse_lsn,
    pg_now,
    pg_time_to_unix,
    standby_status,
    xlog_payload,
    xlog_send_time,
)

MAX_LSN = 2**64 - 1
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pgoutput" / "captured.json"


def xlog_frame(start: int, end: int, send_time: int, payload: bytes) -> bytes:
    return struct.pack(">cQQq", b"w", start, end, send_time) + payload


def keepalive_frame(end: int, send_time: int, reply: int) -> bytes:
    return struct.pack(">cQqB", b"k", end, send_time, reply)


def test_xlogdata_is_parsed_and_its_payload_is_a_view() -> None:
    buf = xlog_frame(0x16B374D848, 0x16B374D900, 123_456_789, b"payload")
    frame = parse_copy_data(buf)
    assert isinstance(frame, XLogData)
    assert (frame.start, frame.end, frame.send_time) == (0x16B374D848, 0x16B374D900, 123_456_789)
    assert isinstance(frame.payload, memoryview)
    assert bytes(frame.payload) == b"payload"
    assert frame.payload.obj is buf  # no copy of the payload


def test_xlogdata_may_be_empty_but_not_shorter_than_its_header() -> None:
    frame = parse_copy_data(xlog_frame(1, 2, 3, b""))
    assert isinstance(frame, XLogData)
    assert len(frame.payload) == 0
    with pytest.raises(DecodeError, match="24 bytes is shorter than its 25-byte header"):
        parse_copy_data(xlog_frame(1, 2, 3, b"")[:-1])


def test_xlogdata_carries_a_captured_pgoutput_message() -> None:
    entry = next(e for e in json.loads(FIXTURE.read_text())["messages"] if e["kind"] == "C")
    payload = bytes.fromhex(entry["hex"])
    frame = parse_copy_data(memoryview(xlog_frame(parse_lsn(entry["lsn"]), 0, 0, payload)))
    assert isinstance(frame, XLogData)
    assert format_lsn(frame.start) == entry["lsn"]
    message = decode(frame.payload)
    assert isinstance(message, Commit)
    assert message == decode(payload)


@pytest.mark.parametrize("reply", [0, 1])
def test_keepalive_is_parsed(reply: int) -> None:
    frame = parse_copy_data(keepalive_frame(MAX_LSN, 42, reply))
    assert frame == Keepalive(MAX_LSN, 42, bool(reply))


@pytest.mark.parametrize("length", [1, 17, 19, 40])
def test_keepalive_of_wrong_length_is_rejected(length: int) -> None:
    buf = (keepalive_frame(1, 2, 0) + bytes(30))[:length]
    with pytest.raises(DecodeError, match=f"Keepalive \\('k'\\) message is {length} bytes"):
        parse_copy_data(buf)


def test_keepalive_reply_flag_must_be_a_bool() -> None:
    with pytest.raises(DecodeError, match="reply flag is 2"):
        parse_copy_data(keepalive_frame(1, 2, 2))


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"", "^empty CopyData message$"),
        (b"r", r"^unknown CopyData message type 'r' \(0x72\) at offset 0$"),
        (b"d" + bytes(30), r"type 'd' \(0x64\)"),
        (b"W" + bytes(30), r"type 'W' \(0x57\)"),
    ],
)
def test_other_messages_are_rejected(buf: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        parse_copy_data(buf)


def test_views_of_other_formats_are_read_as_bytes() -> None:
    buf = keepalive_frame(7, 8, 1)
    assert parse_copy_data(memoryview(buf).cast("b")) == Keepalive(7, 8, True)
    assert parse_copy_data(memoryview(bytearray(buf))) == Keepalive(7, 8, True)
    rows = memoryview(buf).cast("B", (2, len(buf) // 2))  # bytes, but counted in rows
    assert parse_copy_data(rows) == Keepalive(7, 8, True)


def test_standby_status_layout() -> None:
    message = standby_status(10, 9, 8, 7)
    assert len(message) == 34
    assert struct.unpack(">cQQQQ?", message) == (b"r", 10, 9, 8, 7, False)
    assert standby_status(MAX_LSN, 0, 0, 1, reply=True)[-1] == 1


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((-1, 0, 0, 0), "^written LSN -1 is outside"),
        ((0, MAX_LSN + 1, 0, 0), f"^flushed LSN {MAX_LSN + 1} is outside"),
        ((0, 0, -5, 0), "^applied LSN -5 is outside"),
        ((0, 0, 0, -1), "^clock -1 is not a non-negative"),
        ((0, 0, 0, MAX_LSN + 1), "^clock"),
    ],
)
def test_standby_status_rejects_out_of_range_values(
    args: tuple[int, int, int, int], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        standby_status(*args)


def test_standby_status_takes_the_clock_at_both_ends_of_its_range() -> None:
    for now in (0, MAX_LSN):
        assert struct.unpack(">cQQQQ?", standby_status(1, 1, 1, now))[4] == now


def test_pg_now_counts_microseconds_from_2000() -> None:
    expected = (datetime.now(UTC) - datetime(2000, 1, 1, tzinfo=UTC)).total_seconds() * 1e6
    assert abs(pg_now() - expected) < 5e6
    assert isinstance(pg_now(), int)


@pytest.mark.parametrize(
    ("micros", "moment"),
    [
        (0, datetime(2000, 1, 1, tzinfo=UTC)),
        (1_500_000, datetime(2000, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)),
        (-1_000_000, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (804_643_200_250_000, datetime(2025, 7, 1, 0, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_pg_time_to_unix_counts_from_2000(micros: int, moment: datetime) -> None:
    assert pg_time_to_unix(micros) == pytest.approx(moment.timestamp(), abs=1e-6)


def test_pg_now_and_pg_time_to_unix_agree_with_the_unix_clock() -> None:
    before = time.time()
    now = pg_time_to_unix(pg_now())
    assert before - 1e-3 <= now <= time.time() + 1e-3


@pytest.mark.parametrize(
    ("lsn", "text"),
    [
        (0, "0/0"),
        (1, "0/1"),
        (0x16B374D848, "16/B374D848"),
        (0xFFFF_FFFF, "0/FFFFFFFF"),
        (0x1_0000_0000, "1/0"),
        (0xABCDEF, "0/ABCDEF"),
        (MAX_LSN, "FFFFFFFF/FFFFFFFF"),
    ],
)
def test_format_and_parse_lsn(lsn: int, text: str) -> None:
    assert format_lsn(lsn) == text
    assert parse_lsn(text) == lsn
    assert parse_lsn(text.lower()) == lsn


def test_parse_lsn_accepts_zero_padding_up_to_eight_digits() -> None:
    assert parse_lsn("00000016/0B374D84") == 0x16_0B374D84


@pytest.mark.parametrize("lsn", [-1, MAX_LSN + 1])
def test_format_lsn_rejects_out_of_range(lsn: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        format_lsn(lsn)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/",
        "16/",
        "/1",
        "16",
        "16/B374D848/",
        " 16/1",
        "16/1 ",
        "16/1\n",
        "G/1",
        "0x16/1",
        "123456789/0",
        "0/123456789",
        "16-1",
        "+1/1",
        "-1/1",
        "\u0663/1",
        "1_0/1",
        "16//1",
    ],
)
def test_parse_lsn_rejects_bad_text(text: str) -> None:
    # the message shows the text and what an LSN looks like
    expected = (
        f"invalid LSN {text!r}: expected two groups of 1 to 8 hex digits separated by '/',"
        " such as '16/B374D848'"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        parse_lsn(text)


@settings(database=None, deadline=None)
@given(st.integers(0, MAX_LSN))
def test_lsn_round_trip(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


@settings(database=None, deadline=None)
@given(
    st.integers(0, MAX_LSN),
    st.integers(0, MAX_LSN),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=64),
)
def test_xlogdata_round_trip(start: int, end: int, send_time: int, payload: bytes) -> None:
    frame = parse_copy_data(xlog_frame(start, end, send_time, payload))
    assert isinstance(frame, XLogData)
    assert (frame.start, frame.end, frame.send_time, bytes(frame.payload)) == (
        start,
        end,
        send_time,
        payload,
    )


# The listener's path: the payload and the send time without a frame object.


@settings(database=None, deadline=None)
@given(
    st.integers(0, MAX_LSN),
    st.integers(0, MAX_LSN),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=64),
)
def test_xlog_payload_and_send_time_agree_with_the_parsed_frame(
    start: int, end: int, send_time: int, payload: bytes
) -> None:
    buf = memoryview(xlog_frame(start, end, send_time, payload))
    frame = parse_copy_data(buf)
    assert isinstance(frame, XLogData)
    fast = xlog_payload(buf)
    assert fast is not None
    assert bytes(fast) == bytes(frame.payload) == payload
    assert fast.obj is buf.obj  # a view, not a copy
    assert xlog_send_time(buf) == frame.send_time == send_time


def test_xlog_payload_takes_an_empty_payload_but_not_a_short_header() -> None:
    whole = memoryview(xlog_frame(1, 2, 3, b""))
    fast = xlog_payload(whole)
    assert fast is not None
    assert len(fast) == 0
    assert xlog_payload(whole[:-1]) is None  # parse_copy_data raises for it


@pytest.mark.parametrize(
    "buf",
    [
        b"",
        keepalive_frame(1, 2, 0),
        b"k" + bytes(24),  # a 'k' as long as an XLogData header
        b"x" + bytes(30),
    ],
)
def test_xlog_payload_leaves_other_messages_to_parse_copy_data(buf: bytes) -> None:
    assert xlog_payload(memoryview(buf)) is None


def test_xlog_payload_leaves_views_of_other_formats_to_parse_copy_data() -> None:
    frame = xlog_frame(1, 2, 3, b"abcd")
    chars = cast(memoryview, memoryview(frame).cast("c"))  # items are bytes, not ints
    assert xlog_payload(chars) is None
    words = memoryview(bytearray(frame[:24] * 2)).cast("H")
    assert xlog_payload(words) is None
    two_d = memoryview(bytearray(b"w" * 52)).cast("B", (26, 2))
    assert xlog_payload(two_d) is None
