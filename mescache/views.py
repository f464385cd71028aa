"""The catalogue of cached views: every kind of cached value, declared once.

A `View` says what a reader asks for (its parameters, `P`), and from them:

- `key`: its Redis key and families (through mescache.keys.KeySchema, whose
  `VALUE_KINDS` entry of the same `kind` reads the parameters back from a key's name:
  `parse`);
- `ttl`: its safety-net TTL, from the settings;
- `load`: the named query and serialiser that compute its bytes (mescache.reads), which
  the API's fill, warm-up, the checker and the listener's refresh all call, so they store
  identical bytes; `absent` names the loader's errors meaning "no such value" (never
  cached, so a cached one is stale);
- `tables`: the tables whose changes touch it; the rule (mescache.rules) says which keys of
  it a change of them touches;
- `warm`: which of its values warm-up fills (none: not warmed);
- `counter`: for views whose requests are counted (prices), the counter's member.

Readers: the routes (`key`, `ttl`, `load`), warm-up (`warm`), the checker (`parse`, `load`,
`absent`), the rule (`tables`). A new view is one entry here, its key name in the key
schema, its SQL in mescache/sql/queries.sql and its route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from mescache import reads
from mescache.db import Pool
from mescache.errors import OrderNotFound, PricingError
from mescache.keys import CacheKey, KeySchema, decode_name
from mescache.orders import STATUSES
from mescache.pricing import PriceRequest
from mescache.settings import CacheSettings
from mescache.store import Counter, RedisStore

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: whose (a status, or a customer's name), where it starts (None:
    the first page) and how long it is."""

    of: str
    cursor: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class Lookup:
    """What warm-up may need beside the database: the request counts, in Redis."""

    pool: Pool
    settings: CacheSettings
    store: RedisStore
    keys: KeySchema


@dataclass(frozen=True, slots=True)
class View(Generic[P]):
    """One kind of cached value (see the module docstring)."""

    kind: str
    key: Callable[[KeySchema, P], CacheKey]
    parse: Callable[[dict[str, str]], P]
    ttl: Callable[[CacheSettings], float]
    load: Callable[[Pool, CacheSettings, P], Awaitable[bytes]]
    tables: frozenset[str]
    warm: Callable[[Lookup], Awaitable[list[P]]] | None = None
    absent: tuple[type[Exception], ...] = ()
    counter: Callable[[KeySchema, P], Counter] | None = None

    def loader(
        self, pool: Pool, settings: CacheSettings, params: P
    ) -> Callable[[], Awaitable[bytes]]:
        """The fill's loader of one value."""
        return lambda: self.load(pool, settings, params)


def _start(p: dict[str, str]) -> int | None:
    return None if p["start"] == "first" else int(p["start"])


async def _first_pages(lookup: Lookup) -> list[Page]:
    return [Page(s, None, lookup.settings.page_limit_default) for s in STATUSES]


async def _latest_customers(lookup: Lookup) -> list[Page]:
    limit = lookup.settings.page_limit_default
    customers = await reads.recent_customers(lookup.pool, lookup.settings.warm_customers)
    return [Page(c, None, limit) for c in customers]


async def _most_requested(lookup: Lookup) -> list[PriceRequest]:
    """The most requested prices; a counted member naming no valid request is dropped."""
    zset, store = lookup.keys.price_requests(), lookup.store
    if not lookup.settings.warm_prices:
        return []
    top = cast(list[bytes], await store.redis.zrevrange(zset, 0, lookup.settings.warm_prices - 1))
    requests = []
    for raw in top:
        member = raw.decode()
        try:
            requests.append(PriceRequest.from_member(member))
        except PricingError:
            await store.redis.zrem(zset, member)
    return requests


async def _one(_: Lookup) -> list[None]:
    return [None]


ORDER_TABLES = frozenset({"orders"})

ORDER: View[int] = View(
    kind="order",
    key=KeySchema.order,
    parse=lambda p: int(p["id"]),
    ttl=lambda s: s.ttl_order,
    load=lambda pool, _, order_id: reads.order_json(pool, order_id),
    tables=ORDER_TABLES,
    absent=(OrderNotFound,),
)
DASHBOARD: View[None] = View(
    kind="dashboard",
    key=lambda keys, _: keys.dashboard(),
    parse=lambda _: None,
    ttl=lambda s: s.ttl_dashboard,
    load=lambda pool, _, __: reads.dashboard_json(pool),
    tables=ORDER_TABLES,
    warm=_one,
)
NEW_ORDERS: View[None] = View(
    kind="new_orders",
    key=lambda keys, _: keys.new_orders(),
    parse=lambda _: None,
    ttl=lambda s: s.ttl_new,
    load=lambda pool, s, _: reads.newest_json(pool, s.new_orders_limit),
    tables=ORDER_TABLES,
    warm=_one,
)
STATUS_PAGE: View[Page] = View(
    kind="status_page",
    key=lambda keys, p: keys.status_page(p.of, p.cursor, p.limit),
    parse=lambda p: Page(p["status"], _start(p), int(p["limit"])),
    ttl=lambda s: s.ttl_status,
    load=lambda pool, _, p: reads.status_page_json(pool, p.of, p.cursor, p.limit),
    tables=ORDER_TABLES,
    warm=_first_pages,
)
CUSTOMER_PAGE: View[Page] = View(
    kind="customer_page",
    key=lambda keys, p: keys.customer_page(p.of, p.cursor, p.limit),
    parse=lambda p: Page(decode_name(p["customer"]), _start(p), int(p["limit"])),
    ttl=lambda s: s.ttl_customer,
    load=lambda pool, _, p: reads.customer_page_json(pool, p.of, p.cursor, p.limit),
    tables=ORDER_TABLES,
    warm=_latest_customers,
)
CATALOGUE: View[None] = View(
    kind="catalogue",
    key=lambda keys, _: keys.catalogue(),
    parse=lambda _: None,
    ttl=lambda s: s.ttl_catalogue,
    load=lambda pool, _, __: reads.catalogue_json(pool),
    tables=frozenset({"models", "materials"}),
    warm=_one,
)
PRICE: View[PriceRequest] = View(
    kind="price",
    key=lambda keys, r: keys.price(r.model_id, r.material_id, r.params()),
    parse=lambda p: PriceRequest.from_member(f"{p['model']}:{p['material']}:{p['params']}"),
    ttl=lambda s: s.ttl_price,
    load=lambda pool, _, r: reads.price_json(pool, r),
    tables=frozenset({"models", "materials", "pricing_rules"}),
    warm=_most_requested,
    absent=(PricingError,),
    counter=lambda keys, r: Counter(keys.price_requests(), r.member()),
)

# Every cached view, by kind, in warm-up's order (the most requested prices last). The
# probe table's keys are markers the consistency sampler sets, not views of a table.
VIEWS: dict[str, View[Any]] = {
    v.kind: v for v in (DASHBOARD, NEW_ORDERS, STATUS_PAGE, CATALOGUE, CUSTOMER_PAGE, PRICE, ORDER)
}
