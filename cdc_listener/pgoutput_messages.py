"""The messages of the pgoutput logical replication protocol, version 1, as immutable values.

:mod:`cdc_listener.pgoutput` decodes bytes into these (and re-exports them: import them from
there). They live apart from the decoder so that the decoder's compiled build (see
:mod:`cdc_listener.decoder`) returns exactly these classes, not copies of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias, final


@final
class Unchanged:
    """A TOASTed value the server did not send because the change left it alone.

    The one instance is :data:`UNCHANGED` (compare with ``is``); the caller keeps its old value.
    """

    __slots__ = ()
    _instance: ClassVar[Unchanged | None] = None

    def __new__(cls) -> Unchanged:
        """The one instance, so `value is UNCHANGED` can be trusted."""
        # A second instance would make `value is UNCHANGED` silently false.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        # Pickling and copying must hand back the singleton, not a fresh object.
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()

Value: TypeAlias = bytes | Unchanged | None
"""One column of a tuple: bytes as sent ('t' text, or 'b' binary), None for SQL NULL ('n'),
:data:`UNCHANGED` for an unchanged TOASTed value that was not sent ('u')."""

Row: TypeAlias = tuple[Value, ...]
"""All columns of one tuple, in the order of the relation's columns."""


@dataclass(frozen=True, slots=True)
class Begin:
    """'B': a transaction starts; its changes follow, then its :class:`Commit`."""

    final_lsn: int
    commit_time: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """'C': the transaction is committed; ``end_lsn`` is where the next one may start."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class Origin:
    """'O': the transaction was replayed from the named replication origin."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a :class:`Relation`; ``flags`` bit 1 marks a replica identity column."""

    flags: int
    name: str
    type_oid: int
    type_modifier: int

    @property
    def is_key(self) -> bool:
        """Whether the column is part of the replica identity (the key sent in 'K' tuples)."""
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    """'R': a table's shape; sent before its first change in a stream and again after DDL.

    ``replica_identity`` is ``d`` (default), ``n`` (nothing), ``f`` (full) or ``i`` (index).
    With ``f`` the server flags every column as a key column.
    """

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """'Y': names a non-built-in type (an enum, a domain...) used by a following relation."""

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    """'I': a new row."""

    relation_oid: int
    new: Row


@dataclass(frozen=True, slots=True)
class Update:
    """'U': a changed row; ``old`` and ``old_kind`` are None unless the server sent an old row.

    ``old_kind`` ``'O'`` is the whole old row (REPLICA IDENTITY FULL); ``'K'`` the old key, sent
    when it changed: every column, but non-key ones are None without being NULL.
    """

    relation_oid: int
    old: Row | None
    old_kind: str | None
    new: Row


@dataclass(frozen=True, slots=True)
class Delete:
    """'D': a removed row: its whole row (``old_kind`` ``'O'``) or key (``'K'``, as in Update)."""

    relation_oid: int
    old: Row
    old_kind: str


@dataclass(frozen=True, slots=True)
class Truncate:
    """'T': the tables were emptied; ``options`` bit 1 is CASCADE, bit 2 RESTART IDENTITY."""

    options: int
    relation_oids: tuple[int, ...]

    @property
    def cascade(self) -> bool:
        """Whether TRUNCATE ... CASCADE was used."""
        return bool(self.options & 1)

    @property
    def restart_identity(self) -> bool:
        """Whether TRUNCATE ... RESTART IDENTITY was used."""
        return bool(self.options & 2)


Message: TypeAlias = (
    Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate
)
