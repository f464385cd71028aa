"""From decoded pgoutput messages to the rule's changes and the rows a refresh can use.

The relation cache lives here: a Relation message arrives before a table's first change in
a session and again after its schema changes (even inside a transaction), and replaces the
cached one by OID.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

from psycopg.abc import Loader
from psycopg.adapt import Transformer
from psycopg.pq import Format

from cdc_listener.errors import ProtocolViolation
from cdc_listener.pgoutput import (
    UNCHANGED,
    Delete,
    Insert,
    Picked,
    Relation,
    Row,
    Truncate,
    Update,
    UpdateLayouts,
)
from mescache.orders import ORDER_COLUMNS, Order
from mescache.rules import Change, OrderUpdate, Touched, add_change

RowChange = Insert | Update | Delete | Truncate


class RelationCache:
    """The latest Relation message of each table OID, with its column positions."""

    def __init__(self) -> None:
        self._by_oid: dict[int, tuple[Relation, dict[str, int]]] = {}
        # For `orders`: its column count and the positions of id, status and customer.
        self._orders: dict[int, tuple[int, int, int, int]] = {}
        # The same for pgoutput.pick_update: the values it reads of an orders update.
        self.update_layouts: UpdateLayouts = {}

    def remember(self, relation: Relation) -> None:
        """Keep (or replace) a relation by its OID."""
        positions = {column.name: i for i, column in enumerate(relation.columns)}
        self._by_oid[relation.oid] = (relation, positions)
        self._orders.pop(relation.oid, None)
        self.update_layouts.pop(relation.oid, None)
        if relation.name == "orders" and {"id", "status", "customer"} <= positions.keys():
            count = len(relation.columns)
            at = (positions["id"], positions["status"], positions["customer"])
            self._orders[relation.oid] = (count, *at)
            slots = [-1] * count
            for slot, column in enumerate(at):
                slots[column] = slot
            self.update_layouts[relation.oid] = (count, tuple(slots))

    @staticmethod
    def order_update(picked: Picked) -> OrderUpdate:
        """The rule's view of an orders update that pgoutput.pick_update read with
        `update_layouts` (id, status and customer of both images)."""
        _, old, new = picked
        return OrderUpdate(
            int(old[0]),
            int(new[0]),
            old[1].decode(),
            new[1].decode(),
            old[2].decode(),
            new[2].decode(),
        )

    def add_order_update(self, touched: Touched, message: RowChange) -> bool:
        """Add the targets of an `orders` update that carries both whole row images, reading
        the values the rule needs straight from the rows; False (nothing added) for any
        other message, which then goes through `changes_of` and the rule.

        Per row of a catch-up this skips two row views and a Change: the same targets."""
        if type(message) is not Update:
            return False
        slots = self._orders.get(message.relation_oid)
        old = message.old
        if slots is None or old is None:
            return False
        count, id_at, status_at, customer_at = slots
        new = message.new
        if len(old) != count or len(new) != count:
            return False  # the general path names the mismatch
        old_id, new_id = old[id_at], new[id_at]
        old_status, new_status = old[status_at], new[status_at]
        old_customer, new_customer = old[customer_at], new[customer_at]
        if not (
            type(old_id) is bytes
            and type(new_id) is bytes
            and type(old_status) is bytes
            and type(new_status) is bytes
            and type(old_customer) is bytes
            and type(new_customer) is bytes
        ):
            return False  # NULL, unchanged TOAST or a key-only image: the general path
        update = OrderUpdate(
            int(old_id),
            int(new_id),
            old_status.decode(),
            new_status.decode(),
            old_customer.decode(),
            new_customer.decode(),
        )
        add_change(touched, update)
        return True

    def get(self, oid: int) -> Relation:
        """The relation of this OID; ProtocolViolation before its Relation message."""
        return self._entry(oid)[0]

    def view(self, oid: int, row: Row) -> RowView:
        """A row of relation `oid` read by column name; ProtocolViolation if its width is wrong."""
        relation, positions = self._entry(oid)
        if len(row) != len(relation.columns):
            raise ProtocolViolation(
                f"row of {len(row)} values for {relation.name}, which has"
                f" {len(relation.columns)} columns"
            )
        return RowView(positions, row)

    def _entry(self, oid: int) -> tuple[Relation, dict[str, int]]:
        try:
            return self._by_oid[oid]
        except KeyError:
            raise ProtocolViolation(
                f"change for relation {oid} before its Relation message"
            ) from None


class RowView(Mapping[str, object]):
    """A row image read by column name, decoding only the columns asked for: the rule
    reads two of them, so decoding every value of every row would be wasted work."""

    __slots__ = ("_positions", "_row")

    def __init__(self, positions: dict[str, int], row: Row) -> None:
        self._positions = positions
        self._row = row

    def __getitem__(self, name: str) -> object:
        value = self._row[self._positions[name]]
        return value.decode() if isinstance(value, bytes) else value

    def get(self, name: str, default: object = None) -> object:
        """The column's value, or `default` for a column the relation lacks."""
        # The rule calls get() twice a row: Mapping's version goes through a raised KeyError.
        position = self._positions.get(name)
        if position is None:
            return default
        value = self._row[position]
        return value.decode() if type(value) is bytes else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._positions)

    def __len__(self) -> int:
        return len(self._positions)


def changes_of(message: RowChange, relations: RelationCache) -> Iterator[Change]:
    """The rule's view of one row message (a TRUNCATE may name several tables)."""
    if isinstance(message, Truncate):
        for oid in message.relation_oids:
            yield Change(relations.get(oid).name, "truncate")
        return
    oid = message.relation_oid
    table = relations.get(oid).name
    if isinstance(message, Insert):
        yield Change(table, "insert", new=relations.view(oid, message.new))
    elif isinstance(message, Update):
        old = None if message.old is None else relations.view(oid, message.old)
        yield Change(table, "update", old=old, new=relations.view(oid, message.new))
    else:
        yield Change(table, "delete", old=relations.view(oid, message.old))


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
