"""Pure framing of the streaming replication protocol's CopyBoth messages, and LSN helpers.

Contract: :func:`parse_copy_data` turns the body of one CopyData message sent by the walsender
into an :class:`XLogData` (whose payload is a pgoutput message for
:func:`cdc_listener.pgoutput.decode`) or a :class:`Keepalive`, raising
:class:`~cdc_listener.errors.DecodeError` for anything else. :func:`standby_status` builds the
body of the Standby Status Update we send back. Nothing here does I/O; :func:`pg_now` is the only
function that reads the clock.

Times are microseconds since 2000-01-01 00:00 UTC (the PostgreSQL epoch); LSNs are unsigned
64-bit ints, printed by :func:`format_lsn` the way PostgreSQL prints them.
"""

import re
import struct
import time
from dataclasses import dataclass
from typing import Final

from cdc_listener.errors import DecodeError

# Seconds from the Unix epoch to 2000-01-01 00:00 UTC.
_PG_EPOCH_UNIX_SECONDS: Final = 946_684_800
_PG_EPOCH_UNIX_MICROS: Final = _PG_EPOCH_UNIX_SECONDS * 1_000_000

_XLOG_HEADER: Final = struct.Struct(">cQQq")
_KEEPALIVE: Final = struct.Struct(">cQqB")
_STANDBY_STATUS: Final = struct.Struct(">cQQQQ?")
# The send time's place in an XLogData header: after the tag and two LSNs.
_SEND_TIME: Final = struct.Struct(">q")
_SEND_TIME_AT: Final = 17

_MAX_LSN: Final = 0xFFFF_FFFF_FFFF_FFFF
# PostgreSQL accepts 1 to 8 hex digits on each side of the slash, nothing around them.
_LSN_TEXT: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


@dataclass(frozen=True, slots=True)
class XLogData:
    """'w': WAL data; ``payload`` is a view into the received buffer, not a copy.

    ``start`` is the LSN of the payload, ``end`` the server's current end of WAL, ``send_time``
    the server's clock when it sent the frame.
    """

    start: int
    end: int
    send_time: int
    payload: memoryview


@dataclass(frozen=True, slots=True)
class Keepalive:
    """'k': the server's end of WAL and clock; answer at once when ``reply_requested``."""

    end: int
    send_time: int
    reply_requested: bool


def parse_copy_data(buf: bytes | memoryview) -> XLogData | Keepalive:
    """Parse the body of one CopyData message from the walsender.

    Raises DecodeError for an empty buffer, an unknown message type, or a wrong length.
    """
    view = memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        # Other views index and count items, not bytes; a copy is fine for this odd case.
        view = memoryview(view.tobytes())
    if not view:
        raise DecodeError("empty CopyData message")
    tag = view[0]
    if tag == 0x77:  # 'w'
        if len(view) < _XLOG_HEADER.size:
            raise DecodeError(
                f"XLogData ('w') message of {len(view)} bytes is shorter than its"
                f" {_XLOG_HEADER.size}-byte header"
            )
        _, start, end, send_time = _XLOG_HEADER.unpack_from(view)
        return XLogData(start, end, send_time, view[_XLOG_HEADER.size :])
    if tag == 0x6B:  # 'k'
        if len(view) != _KEEPALIVE.size:
            raise DecodeError(
                f"Keepalive ('k') message is {len(view)} bytes, expected {_KEEPALIVE.size}"
            )
        _, end, send_time, reply = _KEEPALIVE.unpack_from(view)
        if reply > 1:
            raise DecodeError(f"Keepalive ('k') reply flag is {reply}, expected 0 or 1")
        return Keepalive(end, send_time, bool(reply))
    raise DecodeError(f"unknown CopyData message type {chr(tag)!r} (0x{tag:02x}) at offset 0")


def xlog_payload(buf: memoryview) -> memoryview | None:
    """The payload of an XLogData frame as a view, without building an :class:`XLogData`;
    None for anything else (a keepalive, a short or odd frame: :func:`parse_copy_data`
    then says what it is, or raises).

    The listener's path for every message: it needs the header's send time only at a
    Commit (:func:`xlog_send_time`), and a frame object per row costs more than the slice.
    """
    if buf.format == "B" and buf.ndim == 1 and len(buf) >= _XLOG_HEADER.size and buf[0] == 0x77:
        return buf[_XLOG_HEADER.size :]
    return None


def xlog_send_time(buf: memoryview) -> int:
    """The send time of a frame that :func:`xlog_payload` accepted."""
    (send_time,) = _SEND_TIME.unpack_from(buf, _SEND_TIME_AT)
    return int(send_time)


def standby_status(
    written: int, flushed: int, applied: int, now: int, reply: bool = False
) -> bytes:
    """Build the body of a Standby Status Update ('r') to send in a CopyData message.

    ``flushed`` is what lets the server recycle WAL: report only what is durably applied.
    ``now`` is in microseconds since 2000-01-01 (see :func:`pg_now`); ``reply`` asks the server
    to answer at once with a keepalive. Raises ValueError for a value out of range.
    """
    for field, value in (("written", written), ("flushed", flushed), ("applied", applied)):
        if not 0 <= value <= _MAX_LSN:
            raise ValueError(f"{field} LSN {value} is outside 0..{_MAX_LSN}")
    if not 0 <= now <= _MAX_LSN:
        raise ValueError(f"clock {now} is not a non-negative 64-bit count of microseconds")
    return _STANDBY_STATUS.pack(b"r", written, flushed, applied, now, reply)


def pg_now() -> int:
    """The current time in microseconds since 2000-01-01 00:00 UTC, the PostgreSQL epoch."""
    return time.time_ns() // 1000 - _PG_EPOCH_UNIX_MICROS


def pg_time_to_unix(micros: int) -> float:
    """A PostgreSQL timestamp (microseconds since 2000-01-01 UTC) as Unix seconds."""
    return micros / 1_000_000 + _PG_EPOCH_UNIX_SECONDS


def format_lsn(lsn: int) -> str:
    """Print an LSN as PostgreSQL does: ``16/B374D848``, uppercase hex, no zero padding."""
    if not 0 <= lsn <= _MAX_LSN:
        raise ValueError(f"LSN {lsn} is outside 0..{_MAX_LSN}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFF_FFFF:X}"


def parse_lsn(text: str) -> int:
    """Parse an LSN as PostgreSQL prints it (``16/B374D848``); raise ValueError otherwise."""
    match = _LSN_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid LSN {text!r}: expected two groups of 1 to 8 hex digits separated by '/',"
            " such as '16/B374D848'"
        )
    return (int(match[1], 16) << 32) | int(match[2], 16)
