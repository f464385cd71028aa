"""The rule: which cached keys a committed change touches. Pure, shared by both sources.

An order's insert, update or delete touches ``order:{id}``, the status families of its old
and new status, ``orders:dashboard`` when either status is active (new or in_progress),
and ``orders:new`` when either status is new (it enters, leaves, or changes while new),
and the customer families of its old and new customer (an order moved to another customer
leaves the first one's list). Without the old row of an update or delete (the table lost
REPLICA IDENTITY FULL), every list is touched, every customer's included.
A change to a model touches the price family of the model; a change to a material touches
its price family unless both row images show its density and price per gram unchanged (a
rename costs nothing; a source that sends no whole images may say which watched columns
changed instead); any change to a pricing rule touches every price. Any
change to a model or a material touches the catalogue of their names.
A row of the consistency probe table touches its ``probe:{id}`` key.
TRUNCATE touches every key of the table's families.

Decode → plan → apply: `add_change` (the one entrance, for every source) adds a change's
abstract targets to a `Touched`; a burst of changes merges into one, and `bound()` swaps a
huge set of ids for "the whole family" so memory stays flat. `plan()` turns the targets
into the whole `Plan` of Redis actions, every key named (mescache.keys), refreshed values
serialised; cdc_listener.apply only queues the plan and sends it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from mescache.keys import CacheKey, KeySchema
from mescache.orders import ACTIVE, STATUSES, Order, dump_order
from mescache.settings import CacheSettings
from mescache.store import lsn_version
from mescache.views import CATALOGUE

Operation = Literal["insert", "update", "delete", "truncate"]
# The columns of a material a price is computed from.
MATERIAL_PRICE_COLUMNS = ("density_g_cm3", "price_per_gram")


@dataclass(frozen=True, slots=True)
class Change:
    """One committed row change (or a TRUNCATE) of a cached table, values as text."""

    table: str
    op: Operation
    old: Mapping[str, object] | None = None
    new: Mapping[str, object] | None = None
    # Which of the columns the source watches changed, when it sends no whole row images
    # (the notify outbox); None: unknown, read the images.
    changed: frozenset[str] | None = None


@dataclass(slots=True)
class Touched:
    """The targets a change (or a burst of them) touches."""

    orders: set[int] = field(default_factory=set)
    all_orders: bool = False
    statuses: set[str] = field(default_factory=set)
    dashboard: bool = False
    newest: bool = False
    price_models: set[int] = field(default_factory=set)
    price_materials: set[int] = field(default_factory=set)
    all_prices: bool = False
    probes: set[int] = field(default_factory=set)
    customers: set[str] = field(default_factory=set)
    all_customers: bool = False
    catalogue: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.orders
            or self.all_orders
            or self.statuses
            or self.dashboard
            or self.newest
            or self.price_models
            or self.price_materials
            or self.all_prices
            or self.probes
            or self.customers
            or self.all_customers
            or self.catalogue
        )

    def update(self, other: Touched) -> None:
        """Add what another change touched to this one."""
        self.orders |= other.orders
        self.all_orders |= other.all_orders
        self.statuses |= other.statuses
        self.dashboard |= other.dashboard
        self.newest |= other.newest
        self.price_models |= other.price_models
        self.price_materials |= other.price_materials
        self.all_prices |= other.all_prices
        self.probes |= other.probes
        self.customers |= other.customers
        self.all_customers |= other.all_customers
        self.catalogue |= other.catalogue

    def bound(self, max_keys: int) -> None:
        """Past `max_keys` ids of a kind, touch the whole family instead of each key."""
        if len(self.orders) > max_keys:
            self.orders.clear()
            self.all_orders = True
        if len(self.price_models) + len(self.price_materials) > max_keys:
            self.price_models.clear()
            self.price_materials.clear()
            self.all_prices = True
        if len(self.customers) > max_keys:
            self.customers.clear()
            self.all_customers = True


def _every_list(touched: Touched) -> None:
    touched.statuses.update(STATUSES)
    touched.dashboard = True
    touched.newest = True


def _row_id(row: Mapping[str, object] | None) -> int | None:
    value = None if row is None else row.get("id")
    return int(value) if isinstance(value, str | int) else None


def _text(row: Mapping[str, object] | None, column: str) -> str | None:
    value = None if row is None else row.get(column)
    return value if isinstance(value, str) else None


def _orders(change: Change, touched: Touched) -> None:
    if change.op == "truncate":
        touched.all_orders = True
        touched.all_customers = True
        _every_list(touched)
        return
    _order_row(
        touched,
        change.op,
        old_id=_row_id(change.old),
        new_id=_row_id(change.new),
        old_status=_text(change.old, "status"),
        new_status=_text(change.new, "status"),
        old_customer=_text(change.old, "customer"),
        new_customer=_text(change.new, "customer"),
    )


def _order_row(
    touched: Touched,
    op: Operation,
    *,
    old_id: int | None,
    new_id: int | None,
    old_status: str | None,
    new_status: str | None,
    old_customer: str | None,
    new_customer: str | None,
) -> None:
    """The targets of one orders row change, given the ids, statuses and customers its
    images hold (None: no image, or the value was not sent)."""
    if old_id is not None:
        touched.orders.add(old_id)
    if new_id is not None:
        touched.orders.add(new_id)
    if (op != "insert" and old_customer is None) or (op != "delete" and new_customer is None):
        touched.all_customers = True  # whose list held the order is unknown
    else:
        touched.customers.update(c for c in (old_customer, new_customer) if c is not None)
    if (op != "insert" and old_status is None) or (op != "delete" and new_status is None):
        # Without both statuses we cannot tell which lists held the order.
        _every_list(touched)
        return
    _lists_of(touched, old_status, new_status)


def _lists_of(touched: Touched, *statuses: str | None) -> None:
    """The lists an order of these statuses is in (None: no such image)."""
    for status in statuses:
        if status is not None:
            touched.statuses.add(status)
            touched.dashboard |= status in ACTIVE
            touched.newest |= status == "new"


def _leaves_prices_alone(change: Change) -> bool:
    """An update of a material whose row images show no priced column changed."""
    old, new = change.old, change.new
    if change.table != "materials" or change.op != "update" or old is None or new is None:
        return False
    if change.changed is not None:
        same_id = _row_id(old) is not None and _row_id(old) == _row_id(new)
        return same_id and not change.changed.intersection(MATERIAL_PRICE_COLUMNS)
    columns = ("id", *MATERIAL_PRICE_COLUMNS)
    if not all(c in old and c in new for c in columns):
        return False  # no full images (the outbox sends ids only, after its own filter)
    return all(old[c] == new[c] for c in columns)


def _prices(change: Change, touched: Touched) -> None:
    if change.op == "truncate" or change.table == "pricing_rules":
        touched.all_prices = True
        return
    if _leaves_prices_alone(change):
        return
    target = touched.price_models if change.table == "models" else touched.price_materials
    ids = [_row_id(row) for row in (change.old, change.new)]
    target.update(i for i in ids if i is not None)
    if all(i is None for i in ids):
        touched.all_prices = True


def _probe(change: Change, touched: Touched) -> None:
    # A probe row is only ever updated one at a time; a TRUNCATE has no key to time.
    for row in (change.old, change.new):
        probe_id = _row_id(row)
        if probe_id is not None:
            touched.probes.add(probe_id)


class OrderUpdate(NamedTuple):
    """An update of `orders` carrying both whole images, as the values the rule reads: the
    stream's commonest change, read straight from the row (no Change, no row views). A
    named tuple: built once per row of a catch-up, where a frozen dataclass's field-by-field
    initialisation cost more than the rule itself."""

    old_id: int
    new_id: int
    old_status: str
    new_status: str
    old_customer: str
    new_customer: str


def add_change(touched: Touched, change: Change | OrderUpdate) -> None:
    """Add the targets of one change to `touched` (a transaction's or a burst's set): the
    rule's one entrance, for every source and every change."""
    if isinstance(change, OrderUpdate):
        # The fast path of a catch-up: the targets of this update's Change, every value known.
        touched.orders.update((change.old_id, change.new_id))
        touched.customers.update((change.old_customer, change.new_customer))
        _lists_of(touched, change.old_status, change.new_status)
        return
    # The catalogue of names is one key: the tables its view declares touch it.
    touched.catalogue |= change.table in CATALOGUE.tables
    if change.table == "orders":
        _orders(change, touched)
    elif change.table in ("models", "materials", "pricing_rules"):
        _prices(change, touched)
    elif change.table == "cache_probe":
        _probe(change, touched)


def touched_by(change: Change) -> Touched:
    """The targets one change touches; tables that are not cached touch nothing."""
    touched = Touched()
    add_change(touched, change)
    return touched


# The plan: what the listener sends to Redis for a batch's targets, every key named.

Image = tuple[Order | None, int]  # an order's latest row image and its commit position


@dataclass(frozen=True, slots=True)
class Refresh:
    """A value written in place of an invalidation: its bytes, TTL and version (the commit
    position of an order's image; None for a value recomputed now, newer than any)."""

    key: CacheKey
    body: bytes
    ttl: float
    version: str | None


@dataclass(slots=True)
class Plan:
    """Every Redis action of a batch, keys named: SCAN patterns to flush (a family whose
    members cannot be listed), values to refresh, keys to invalidate (value, fence and
    lease names) and families to invalidate (tag set and fence)."""

    flush: list[str] = field(default_factory=list)
    refresh: list[Refresh] = field(default_factory=list)
    invalidate: list[tuple[str, str, str]] = field(default_factory=list)
    families: list[tuple[str, str]] = field(default_factory=list)


def needs_model_ids(touched: Touched) -> bool:
    """Whether the plan moves price families in every model's slot (a material or a pricing
    rule changed): the caller reads the model ids, after the commit, and passes them."""
    return bool(touched.price_materials or touched.all_prices)


def plan(
    touched: Touched,
    keys: KeySchema,
    settings: CacheSettings,
    *,
    images: Mapping[int, Image] | None = None,
    model_ids: Sequence[int] = (),
    dashboard: bytes | None = None,
) -> Plan:
    """The actions for `touched`. With `images` (refresh mode) an order with a row image is
    refreshed from it, one without is invalidated; with `dashboard` the dashboard is
    refreshed with those bytes instead of invalidated. `model_ids`: every model's id, when
    `needs_model_ids`."""
    actions = Plan()
    if touched.all_orders:
        actions.flush.append(keys.orders_pattern())
    if touched.all_customers:
        actions.flush.append(keys.customers_pattern())
    order_names = keys.order_names
    for order_id in touched.orders:
        # Refreshed from its latest image, if the batch has one (None: deleted or incomplete).
        if images is not None and (image := images.get(order_id)) and image[0] is not None:
            body, version = dump_order(image[0]), lsn_version(image[1])
            actions.refresh.append(Refresh(keys.order(order_id), body, settings.ttl_order, version))
        else:
            actions.invalidate.append(order_names(order_id))
    others: list[CacheKey] = []
    if touched.newest:
        others.append(keys.new_orders())
    if touched.dashboard and dashboard is None:
        others.append(keys.dashboard())
    if touched.catalogue:
        others.append(keys.catalogue())
    others += [keys.probe(p) for p in sorted(touched.probes)]
    actions.invalidate += [(key.name, key.fence, key.lease) for key in others]
    fenced = keys.family_fence
    actions.families = [(f, fenced(f)) for f in map(keys.status_family, sorted(touched.statuses))]
    if not touched.all_customers:
        named = keys.customer_family_names
        actions.families += [named(c) for c in sorted(touched.customers)]
    prices = [keys.price_family_of_model(m) for m in sorted(touched.price_models)]
    prices += _every_models_price_families(touched, keys, model_ids)
    actions.families += [(family, fenced(family)) for family in prices]
    if touched.dashboard and dashboard is not None:
        actions.refresh.append(Refresh(keys.dashboard(), dashboard, settings.ttl_dashboard, None))
    return actions


def _every_models_price_families(
    touched: Touched, keys: KeySchema, model_ids: Sequence[int]
) -> list[str]:
    """The price families a material or pricing rule change moves. Each model keeps them in
    its own slot, so they move in every model's (the ids read after the commit include
    every model whose prices could be cached: a deleted model's were made unreachable by
    its own deletion)."""
    if touched.all_prices:
        return [keys.all_prices(model) for model in model_ids]
    materials = sorted(touched.price_materials)
    return [keys.price_family_of_material(m, model) for model in model_ids for m in materials]
