"""From decoded pgoutput messages to the rule's changes and the rows a refresh can use.

The relation cache lives here: a Relation message arrives before a table's first change in
a session and again after its schema changes (even inside a transaction), and replaces the
cached one by OID.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from psycopg.abc import Loader
from psycopg.adapt import Transformer
from psycopg.pq import Format

from cdc_listener.errors import ListenerError
from cdc_listener.pgoutput import (
    UNCHANGED,
    Delete,
    Insert,
    Relation,
    Row,
    Truncate,
    Update,
    row_as_text,
)
from mescache.orders import ORDER_COLUMNS, Order
from mescache.rules import Change

RowChange = Insert | Update | Delete | Truncate


class RelationCache:
    """The latest Relation message of each table OID."""

    def __init__(self) -> None:
        self._by_oid: dict[int, Relation] = {}

    def remember(self, relation: Relation) -> None:
        self._by_oid[relation.oid] = relation

    def get(self, oid: int) -> Relation:
        try:
            return self._by_oid[oid]
        except KeyError:
            raise ListenerError(f"change for relation {oid} before its Relation message") from None


def changes_of(message: RowChange, relations: RelationCache) -> Iterator[Change]:
    """The rule's view of one row message (a TRUNCATE may name several tables)."""
    if isinstance(message, Truncate):
        for oid in message.relation_oids:
            yield Change(relations.get(oid).name, "truncate")
        return
    relation = relations.get(message.relation_oid)
    if isinstance(message, Insert):
        yield Change(relation.name, "insert", new=row_as_text(relation, message.new))
    elif isinstance(message, Update):
        old = None if message.old is None else row_as_text(relation, message.old)
        yield Change(relation.name, "update", old=old, new=row_as_text(relation, message.new))
    else:
        yield Change(relation.name, "delete", old=row_as_text(relation, message.old))


class RowImages:
    """Turns an orders row image into the cached order, with the same types a SELECT
    yields (psycopg's own text loaders, chosen by the column's type OID)."""

    def __init__(self) -> None:
        self._transformer = Transformer()
        self._loaders: dict[int, Loader] = {}

    def _loader(self, oid: int) -> Loader:
        if oid not in self._loaders:
            self._loaders[oid] = self._transformer.get_loader(oid, Format.TEXT)
        return self._loaders[oid]

    def order(self, relation: Relation, row: Row) -> Order | None:
        """The order, or None when a column is missing or was not sent (unchanged TOAST)."""
        values: dict[str, Any] = {}
        for column, value in zip(relation.columns, row, strict=True):
            if column.name not in ORDER_COLUMNS:
                continue  # a column added later is not part of the served order
            if value is UNCHANGED:
                return None
            values[column.name] = (
                None if value is None else self._loader(column.type_oid).load(cast(bytes, value))
            )
        if len(values) != len(ORDER_COLUMNS):
            return None
        return cast(Order, {name: values[name] for name in ORDER_COLUMNS})
