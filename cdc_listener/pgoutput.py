"""Strict, pure decoder for the pgoutput logical replication protocol, version 1 (PostgreSQL 15).

Contract: :func:`decode` turns one pgoutput message (the payload of an XLogData frame, or one
``data`` value of ``pg_logical_slot_peek_binary_changes``) into one immutable message object. It
does no I/O and keeps no state between calls. It is strict: the payload must be consumed exactly,
so a truncated message, a trailing byte, an unknown message type, an unknown tuple-value kind, an
unterminated or non-UTF-8 string, or an unknown replica identity raises
:class:`~cdc_listener.errors.DecodeError` naming the message type and the byte offset. No other
exception escapes, whatever the input, and nothing is read past the end of the buffer.

Integers are returned as sent: LSNs as ints, times as microseconds since 2000-01-01 UTC (the
PostgreSQL epoch), OIDs and xids as unsigned ints. Tuple values stay raw bytes; turning them into
text (with column names) is :func:`row_as_text`'s job, because only the caller knows the current
:class:`Relation` for an OID: the relation cache belongs to the consumer, not to this module.

Only the message types of protocol version 1 are known. Streaming (v2), two-phase (v3) and
logical decoding messages (``'M'``, sent only when the ``messages`` option is on) are rejected as
unknown, which is what we want: we never ask for them, so receiving one means a misconfiguration.

The message classes live in :mod:`cdc_listener.pgoutput_messages` and are re-exported here. This
module is also the source of the listener's compiled decoder (mypyc, :mod:`cdc_listener.decoder`):
the same code, compiled, and tested against this one as its reference.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from cdc_listener.errors import DecodeError
from cdc_listener.pgoutput_messages import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    Relation,
    Row,
    Truncate,
    TypeInfo,
    Unchanged,
    Update,
    Value,
)

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "Picked",
    "Relation",
    "Row",
    "Truncate",
    "TypeInfo",
    "Unchanged",
    "Update",
    "UpdateLayouts",
    "Value",
    "decode",
    "pick_update",
    "row_as_text",
]


# Relation.replica_identity: default (primary key), nothing, full, index.
_REPLICA_IDENTITIES: Final = frozenset("dnfi")


_BEGIN: Final = struct.Struct(">QqI")
_COMMIT: Final = struct.Struct(">BQQq")
_LSN: Final = struct.Struct(">Q")
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")
_OID_TAG: Final = struct.Struct(">IB")
_RELATION_TAIL: Final = struct.Struct(">BH")
_COLUMN_TAIL: Final = struct.Struct(">Ii")
_TRUNCATE_HEAD: Final = struct.Struct(">IB")

# Tuple value kinds and tuple tags as the ints that indexing bytes yields.
_TEXT: Final = ord("t")
_BINARY: Final = ord("b")
_NULL: Final = ord("n")
_TOAST: Final = ord("u")
_SIZED: Final = (_TEXT, _BINARY)
_NEW: Final = ord("N")
_KEY: Final = ord("K")
_OLD: Final = ord("O")


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    try:
        nul = data.index(0, pos)
    except ValueError:
        raise DecodeError(f"string at offset {pos} has no NUL terminator") from None
    try:
        return data[pos:nul].decode(), nul + 1
    except UnicodeDecodeError as exc:
        raise DecodeError(f"string at offset {pos} is not UTF-8 ({exc.reason})") from None


def _tuple(data: bytes, pos: int) -> tuple[Row, int]:
    begin = pos
    (count,) = _U16.unpack_from(data, pos)
    pos += 2
    values: list[Value] = []
    # The listener's hot loop, written for its compiled build (mypyc, cdc_listener.decoder):
    # there bytes indexing, shifts and list.append are native operations, four times fewer
    # instructions per value than struct calls through a bound method (which CPython alone
    # runs about a fifth faster). The end of the buffer is checked once, after the loop: a
    # slice past the end only comes up short, it never reads beyond the buffer. Any failure
    # walks the tuple again, checking each value, so the error names the value at fault.
    try:
        for _ in range(count):
            kind = data[pos]
            if kind == _TEXT or kind == _BINARY:  # noqa: PLR1714, SIM109  # cheaper than `in`
                start = pos + 5
                size = (
                    data[pos + 1] << 24 | data[pos + 2] << 16 | data[pos + 3] << 8 | data[pos + 4]
                )
                pos = start + size
                values.append(data[start:pos])
            elif kind == _NULL:
                values.append(None)
                pos += 1
            elif kind == _TOAST:
                values.append(UNCHANGED)
                pos += 1
            else:
                raise DecodeError(f"unknown tuple value kind {chr(kind)!r} at offset {pos}")
    except (IndexError, struct.error):
        _walk_strictly(data, begin)
        raise  # not reached: the strict walk raised
    if pos > len(data):
        _walk_strictly(data, begin)
    return tuple(values), pos


def _walk_strictly(data: bytes, pos: int) -> None:
    """Walk a tuple that failed to decode, checking each value; raise the DecodeError
    that names the first one at fault."""
    (count,) = _U16.unpack_from(data, pos)
    pos += 2
    end = len(data)
    try:
        for _ in range(count):
            kind = data[pos]
            if kind in _SIZED:
                (size,) = _U32.unpack_from(data, pos + 1)
                start = pos + 5
                pos = start + size
                if pos > end:
                    raise DecodeError(
                        f"value of {size} bytes at offset {start} runs past the end ({end})"
                    )
            elif kind in (_NULL, _TOAST):
                pos += 1
            else:
                raise DecodeError(f"unknown tuple value kind {chr(kind)!r} at offset {pos}")
    except (IndexError, struct.error):
        raise DecodeError(f"tuple of {count} columns truncated at offset {pos}") from None
    raise DecodeError(f"tuple of {count} columns runs past the end ({end})")


def _begin(data: bytes, pos: int) -> tuple[Message, int]:
    final_lsn, commit_time, xid = _BEGIN.unpack_from(data, pos)
    return Begin(final_lsn, commit_time, xid), pos + _BEGIN.size


def _commit(data: bytes, pos: int) -> tuple[Message, int]:
    flags, commit_lsn, end_lsn, commit_time = _COMMIT.unpack_from(data, pos)
    return Commit(flags, commit_lsn, end_lsn, commit_time), pos + _COMMIT.size


def _origin(data: bytes, pos: int) -> tuple[Message, int]:
    (commit_lsn,) = _LSN.unpack_from(data, pos)
    name, pos = _cstring(data, pos + _LSN.size)
    return Origin(commit_lsn, name), pos


def _relation(data: bytes, pos: int) -> tuple[Message, int]:
    (oid,) = _U32.unpack_from(data, pos)
    namespace, pos = _cstring(data, pos + 4)
    name, pos = _cstring(data, pos)
    identity, count = _RELATION_TAIL.unpack_from(data, pos)
    replica_identity = chr(identity)
    if replica_identity not in _REPLICA_IDENTITIES:
        raise DecodeError(f"unknown replica identity {replica_identity!r} at offset {pos}")
    pos += _RELATION_TAIL.size
    columns: list[Column] = []
    for _ in range(count):
        flags = data[pos]
        column_name, pos = _cstring(data, pos + 1)
        type_oid, type_modifier = _COLUMN_TAIL.unpack_from(data, pos)
        pos += _COLUMN_TAIL.size
        columns.append(Column(flags, column_name, type_oid, type_modifier))
    return Relation(oid, namespace, name, replica_identity, tuple(columns)), pos


def _type(data: bytes, pos: int) -> tuple[Message, int]:
    (oid,) = _U32.unpack_from(data, pos)
    namespace, pos = _cstring(data, pos + 4)
    name, pos = _cstring(data, pos)
    return TypeInfo(oid, namespace, name), pos


def _insert(data: bytes, pos: int) -> tuple[Message, int]:
    oid, tag = _OID_TAG.unpack_from(data, pos)
    if tag != _NEW:
        raise DecodeError(f"expected 'N' tuple, got {chr(tag)!r} at offset {pos + 4}")
    new, pos = _tuple(data, pos + _OID_TAG.size)
    return Insert(oid, new), pos


def _update(data: bytes, pos: int) -> tuple[Message, int]:
    oid, tag = _OID_TAG.unpack_from(data, pos)
    pos += _OID_TAG.size
    old: Row | None = None
    old_kind: str | None = None
    if tag in (_KEY, _OLD):
        old_kind = chr(tag)
        old, pos = _tuple(data, pos)
        tag = data[pos]
        pos += 1
    if tag != _NEW:
        raise DecodeError(f"expected 'N' tuple, got {chr(tag)!r} at offset {pos - 1}")
    new, pos = _tuple(data, pos)
    return Update(oid, old, old_kind, new), pos


def _delete(data: bytes, pos: int) -> tuple[Message, int]:
    oid, tag = _OID_TAG.unpack_from(data, pos)
    if tag not in (_KEY, _OLD):
        raise DecodeError(f"expected 'K' or 'O' tuple, got {chr(tag)!r} at offset {pos + 4}")
    old, pos = _tuple(data, pos + _OID_TAG.size)
    return Delete(oid, old, chr(tag)), pos


def _truncate(data: bytes, pos: int) -> tuple[Message, int]:
    count, options = _TRUNCATE_HEAD.unpack_from(data, pos)
    pos += _TRUNCATE_HEAD.size
    # Checked first so a corrupt count cannot make struct build a format of billions of items.
    if pos + 4 * count > len(data):
        raise DecodeError(f"{count} relation OIDs at offset {pos} run past the end ({len(data)})")
    oids = struct.unpack_from(f">{count}I", data, pos)
    return Truncate(options, oids), pos + 4 * count


_PARSERS: Final[dict[int, tuple[str, Callable[[bytes, int], tuple[Message, int]]]]] = {
    ord("B"): ("Begin", _begin),
    ord("C"): ("Commit", _commit),
    ord("O"): ("Origin", _origin),
    ord("R"): ("Relation", _relation),
    ord("Y"): ("Type", _type),
    ord("I"): ("Insert", _insert),
    ord("U"): ("Update", _update),
    ord("D"): ("Delete", _delete),
    ord("T"): ("Truncate", _truncate),
}


def decode(payload: bytes | bytearray | memoryview) -> Message:
    """Decode one whole pgoutput v1 message; raise DecodeError, and only that, for anything else."""
    # One copy for non-bytes input buys bytes.index and slices that are bytes, not views.
    data = payload if isinstance(payload, bytes) else bytes(payload)
    if not data:
        raise DecodeError("empty pgoutput message")
    tag = data[0]
    entry = _PARSERS.get(tag)
    if entry is None:
        raise DecodeError(f"unknown pgoutput message type {chr(tag)!r} (0x{tag:02x}) at offset 0")
    kind, parse = entry
    try:
        message, pos = parse(data, 1)
    except DecodeError as exc:
        raise DecodeError(f"pgoutput {kind} ({chr(tag)!r}) message: {exc}") from None
    except (struct.error, IndexError) as exc:
        # struct.error names the offset it wanted; IndexError comes from a single-byte field.
        raise DecodeError(
            f"pgoutput {kind} ({chr(tag)!r}) message of {len(data)} bytes is truncated: {exc}"
        ) from None
    if pos != len(data):
        raise DecodeError(
            f"pgoutput {kind} ({chr(tag)!r}) message has {len(data) - pos} trailing bytes"
            f" at offset {pos}"
        )
    return message


# An update's relation OID -> (its column count, for each column the index of its value in
# what pick_update returns, or -1 for a column not wanted).
UpdateLayouts = dict[int, tuple[int, tuple[int, ...]]]
Picked = tuple[int, tuple[bytes, ...], tuple[bytes, ...]]

_UPDATE: Final = ord("U")


def pick_update(payload: bytes | bytearray | memoryview, layouts: UpdateLayouts) -> Picked | None:
    """The relation OID and the wanted values of both row images of an Update of a relation
    in `layouts` that carries its whole old row ('O'), in the order the layout gives; None
    for any other message, for a wanted value that is not sent as a value (NULL, unchanged
    TOAST), and for anything malformed.

    The listener's fast path: it reads the few values the rule needs without building an
    Update and its two rows. Whenever it returns values, :func:`decode` of the same payload
    returns an Update with those values at those columns; whenever decode would raise, it
    returns None (the caller then decodes and gets the error).
    """
    data = payload if isinstance(payload, bytes) else bytes(payload)
    try:
        if data[0] != _UPDATE or data[5] != _OLD:
            return None
        oid = data[1] << 24 | data[2] << 16 | data[3] << 8 | data[4]
        layout = layouts.get(oid)
        if layout is None:
            return None
        count, slots = layout
        old, pos = _pick(data, 6, count, slots)
        if old is None or data[pos] != _NEW:
            return None
        new, pos = _pick(data, pos + 1, count, slots)
    except IndexError:  # the message ends early: decode names where
        return None
    if new is None or pos != len(data):
        return None
    return oid, old, new


def _pick(
    data: bytes, pos: int, count: int, slots: tuple[int, ...]
) -> tuple[tuple[bytes, ...] | None, int]:
    """The wanted values of the tuple at `pos` and the position after it; None if the tuple
    is not `count` values or a wanted one is not a value. IndexError if it ends early."""
    if len(slots) != count or (data[pos] << 8 | data[pos + 1]) != count:
        return None, pos
    pos += 2
    picked: list[bytes] = []
    at: list[int] = []
    for i in range(count):
        kind = data[pos]
        if kind == _TEXT or kind == _BINARY:  # noqa: PLR1714, SIM109  # as in _tuple
            start = pos + 5
            pos = start + (
                data[pos + 1] << 24 | data[pos + 2] << 16 | data[pos + 3] << 8 | data[pos + 4]
            )
            if slots[i] >= 0:
                picked.append(data[start:pos])
                at.append(slots[i])
        elif (kind == _NULL or kind == _TOAST) and slots[i] < 0:  # noqa: PLR1714, SIM109
            pos += 1
        else:
            return None, pos  # an unknown kind, or no value where one is wanted
    if pos > len(data):
        return None, pos  # the last value runs past the end
    return tuple(value for _, value in sorted(zip(at, picked, strict=True))), pos


def row_as_text(relation: Relation, row: Row) -> dict[str, str | Unchanged | None]:
    """Map a row of text-format values to the relation's column names, decoding UTF-8.

    Assumes the text format (we never request binary) and a UTF-8 server encoding. Raises
    DecodeError if the row does not fit the relation, which means the caller used a stale
    :class:`Relation`, or if a value is not UTF-8.
    """
    columns = relation.columns
    if len(row) != len(columns):
        raise DecodeError(
            f"row has {len(row)} values but relation {relation.namespace}.{relation.name}"
            f" has {len(columns)} columns"
        )
    result: dict[str, str | Unchanged | None] = {}
    for column, value in zip(columns, row, strict=True):
        if isinstance(value, bytes):
            try:
                result[column.name] = value.decode()
            except UnicodeDecodeError as exc:
                raise DecodeError(
                    f"value of column {column.name!r} is not UTF-8 ({exc.reason})"
                ) from None
        else:
            result[column.name] = value
    return result
