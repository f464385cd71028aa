"""A stream entry as the writer reads it: parsed strictly, so a bad one is dead-lettered
with a reason instead of being half-applied."""

from __future__ import annotations

from dataclasses import dataclass

from mescache.orders import STATUSES, Status
from writer.errors import MalformedEntry


@dataclass(frozen=True, slots=True)
class StatusEntry:
    """One accepted status change: move `order_id` to `status` (checked from `from_status`)."""

    entry: str
    order_id: int
    status: Status
    from_status: str

    def fields(self) -> dict[str, str]:
        """The entry's fields as the stream stores them."""
        return {
            "entry": self.entry,
            "order_id": str(self.order_id),
            "status": self.status,
            "from": self.from_status,
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def raw_fields(fields: dict[bytes, bytes] | None) -> dict[str, str]:
    """A stream entry's fields as text (none for a deleted entry)."""
    return {_text(k): _text(v) for k, v in (fields or {}).items()}


def parse_entry(entry: str, fields: dict[str, str]) -> StatusEntry:
    """The status change an entry carries; MalformedEntry if it carries none."""
    order_id, status = fields.get("order_id", ""), fields.get("status", "")
    if not order_id.isdigit() or int(order_id) < 1:
        raise MalformedEntry(f"malformed entry: order_id {order_id!r} is not an order id")
    if status not in STATUSES:
        raise MalformedEntry(f"malformed entry: {status!r} is not a status")
    return StatusEntry(entry, int(order_id), status, fields.get("from", ""))
