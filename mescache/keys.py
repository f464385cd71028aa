"""The key schema: every cache key name is spelled here and nowhere else.

Default names (no prefix); the part in braces is the Redis Cluster *hash tag*, so every
key one script touches lives in one hash slot, while orders, statuses and models spread
over the slots:

- ``order:{17}`` one order; ``orders:{dashboard}``; ``orders:{new}``;
- ``orders:{status:new}:page:{start}:{limit}`` a page of one status; the family's tag set
  ``orders:{status:new}`` lists its pages and its fence ``orders:{status:new}#fence``
  fences them all;
- ``price:{model:5}:{material}:{params}`` a price, in three families kept in the model's
  slot: ``price:{model:5}`` (the model's prices), ``price:{model:5}:material:2`` (its
  prices in material 2) and ``price:{model:5}:all``. A change of material 2 or of a pricing
  rule moves that family of every model, so each price stays checkable in one script;
- ``orders:{customer:Anna%20K.}:page:{start}:{limit}`` a page of one customer's orders,
  in the family ``orders:{customer:Anna%20K.}``; the name is percent-encoded (only
  ``A-Z a-z 0-9 _ . - ~`` stay as they are), so a name holding ``{``, ``}``, ``*``, ``:``
  or spaces can neither move the hash tag nor act as a SCAN pattern;
- ``catalogue:{names}`` the names of every model and material;
- ``probe:{3}`` a row of the consistency probe table;
- ``stats:price-requests`` counts price requests for warm-up, ``stats:consistency`` holds
  the listener's consistency figure and ``cache:master`` names the Redis master the
  listener last saw (none is cache: flushes keep them).

Companions of a value carry its name and a suffix: ``#fence`` (a counter every
invalidation or refresh moves), ``#lease`` (one filler at a time), ``#version`` (the commit
position of a refreshed value) and, for a family's member, ``#token`` (the fences it was
filled under). Why this holds on a Redis that evicts any key at any moment (eviction and
flushes alike), see mescache.store: a missing fence never equals one read before, and a
family member is served only while the fences it was filled under stand, so a vanished tag
set or fence costs a miss, never a stale hit.

Write-behind (mescache.pending) adds keys that are not cache: ``order:{17}#pending`` (a
status change accepted but not yet settled), the stream ``writes:status`` the writer
consumes and its dead letters ``writes:status:dead``. A flush of the namespace or of
``order:*`` must leave them alone (`outlives_flush`): they hold writes, not copies.

Besides keys, the namespace has one pub/sub channel, ``cache:changes``: the listener
publishes there each batch of changes it has applied, so open dashboards can refetch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote


@dataclass(frozen=True, slots=True)
class CacheKey:
    """A cached value's name with the companions the store's scripts need."""

    name: str
    fences: tuple[str, ...]  # every fence a fill must find unmoved (at least one)
    lease: str
    tags: tuple[str, ...] = ()  # the families' tag sets the key registers in

    @property
    def fence(self) -> str:
        """The fence an invalidation of this one key moves."""
        return self.fences[0]

    @property
    def tag(self) -> str | None:
        """The key's first family, if it has one."""
        return self.tags[0] if self.tags else None

    @property
    def token(self) -> str | None:
        """Where a family member keeps the fences it was filled under: it is served only
        while they stand (an invalidation of its family never touches the member itself).
        None for a key of its own fence, which every invalidation deletes."""
        return f"{self.name}#token" if self.tags else None


@dataclass(frozen=True, slots=True)
class KeyRef:
    """What a name found in the namespace stands for: its kind, the parameters it was
    built from and, for a cached value, its CacheKey (to read its fence)."""

    kind: str
    params: dict[str, str]
    key: CacheKey | None = None


COMPANION: Final = "companion"  # fences, leases, versions, tokens: every name with '#'
TAG_SET: Final = "tag_set"
KEPT: Final = "kept"  # no copy of PostgreSQL (write-behind's writes, counters): never flushed
UNKNOWN: Final = "unknown"
# Names that are bookkeeping, not cached values: the families' tag sets.
_BOOKKEEPING: Final = (
    (
        TAG_SET,
        re.compile(
            r"orders:\{status:[a-z_]+\}|orders:\{customer:[A-Za-z0-9_.~%-]+\}"
            r"|price:\{model:[0-9]+\}(:material:[0-9]+|:all)?"
        ),
    ),
)


def check_prefix(prefix: str) -> str:
    """A key prefix, refused if it would choose the hash slot itself (braces) or hold
    characters a SCAN pattern treats specially."""
    if any(c in prefix for c in "{}*?[]\\"):
        raise ValueError("KEY_PREFIX must not contain any of { } * ? [ ] \\")
    return prefix


@dataclass(frozen=True, slots=True)
class KeySchema:
    """Builds key names under an optional prefix."""

    prefix: str = ""

    def _key(self, name: str, *families: str) -> CacheKey:
        """A key of no family (its own fence) or of the given families (theirs; full names)."""
        full = self.prefix + name
        return CacheKey(
            name=full,
            fences=tuple(self.family_fence(f) for f in families or (full,)),
            lease=f"{full}#lease",
            tags=families,
        )

    def changes_channel(self) -> str:
        """The pub/sub channel announcing each applied batch of changes."""
        return f"{self.prefix}cache:changes"

    def dashboard(self) -> CacheKey:
        """The operators' dashboard: every new and in-progress order."""
        return self._key("orders:{dashboard}")

    def new_orders(self) -> CacheKey:
        """The newest new orders."""
        return self._key("orders:{new}")

    def order(self, order_id: int) -> CacheKey:
        """One order (also the client's status query)."""
        return self._key(f"order:{{{order_id}}}")

    def order_names(self, order_id: int) -> tuple[str, str, str]:
        """The value, fence and lease names of ``order(order_id)``, without building the
        CacheKey: a catch-up invalidates tens of thousands of orders a second."""
        name = f"{self.prefix}order:{{{order_id}}}"
        return name, f"{name}#fence", f"{name}#lease"

    def probe(self, probe_id: int) -> CacheKey:
        """The key a row of the consistency probe table invalidates."""
        return self._key(f"probe:{{{probe_id}}}")

    def status_family(self, status: str) -> str:
        """The tag set naming every cached page of one status."""
        return f"{self.prefix}orders:{{status:{status}}}"

    def status_page(self, status: str, cursor: int | None, limit: int) -> CacheKey:
        """One page of one status's orders, a member of that status's family."""
        start = "first" if cursor is None else str(cursor)
        family = self.status_family(status)
        return self._key(f"{family[len(self.prefix) :]}:page:{start}:{limit}", family)

    def customer_family(self, customer: str) -> str:
        """The tag set naming every cached page of one customer's orders."""
        return f"{self.prefix}orders:{{customer:{encode_name(customer)}}}"

    def customer_family_names(self, customer: str) -> tuple[str, str]:
        """The tag set and fence of one customer's family, remembered: a catch-up names
        the same customers' families batch after batch."""
        return _customer_family_names(self.prefix, customer)

    def customer_page(self, customer: str, cursor: int | None, limit: int) -> CacheKey:
        """One page of a customer's orders, newest first."""
        start = "first" if cursor is None else str(cursor)
        family = self.customer_family(customer)
        return self._key(f"{family[len(self.prefix) :]}:page:{start}:{limit}", family)

    def customers_pattern(self) -> str:
        """Every customer's pages, tag set and fences (when a change cannot tell whose)."""
        return f"{self.prefix}orders:{{customer:*"

    def catalogue(self) -> CacheKey:
        """The names of the models and materials."""
        return self._key("catalogue:{names}")

    def family_fence(self, family: str) -> str:
        """The fence of a key, or of a tag-set family (given its full name)."""
        return f"{family}#fence"

    def price_family_of_model(self, model_id: int) -> str:
        """The tag set of every cached price computed with one model."""
        return f"{self.prefix}price:{{model:{model_id}}}"

    def price_family_of_material(self, material_id: int, model_id: int) -> str:
        """The tag set of one model's cached prices in one material (every model has its
        own, in its slot: a material change moves that family of each model)."""
        return f"{self.price_family_of_model(model_id)}:material:{material_id}"

    def all_prices(self, model_id: int) -> str:
        """The tag set of one model's cached prices that any pricing rule change touches."""
        return f"{self.price_family_of_model(model_id)}:all"

    def price(self, model_id: int, material_id: int, params: str) -> CacheKey:
        """One price; `params` is the canonical parameter string (mescache.pricing)."""
        model = self.price_family_of_model(model_id)
        return self._key(
            f"{model[len(self.prefix) :]}:{material_id}:{params}",
            model,
            self.price_family_of_material(material_id, model_id),
            self.all_prices(model_id),
        )

    def master_mark(self) -> str:
        """The Redis master's replication ID as the listener last saw it (a change means
        acknowledged writes may be lost: cdc_listener.master_watch). Not cache: a flush
        keeps it."""
        return f"{self.prefix}cache:master"

    def near_beat(self, process: str, tag: str | None = None) -> str:
        """An API process's heartbeat through its near-copy invalidation channel; on a
        cluster one per primary, each in a slot of that node (hash tag `tag`)."""
        if tag is None:
            return f"{self.prefix}cache:near-beat:{process}"
        return f"{self.prefix}cache:near-beat:{{{tag}}}:{process}"

    def price_requests(self) -> str:
        """A sorted set counting requests per price (members ``{model}:{material}:{params}``)
        so warm-up can fill the most requested ones."""
        return f"{self.prefix}stats:price-requests"

    def price_requests_halved(self) -> str:
        """When the price request counts were last halved (Redis's clock, ms), so one API
        process halves them once per half-life (api.demand). Not cache: a flush keeps it."""
        return f"{self.prefix}stats:price-requests#halved"

    def consistency(self) -> str:
        """The listener's consistency figure (cdc_listener.sampler), JSON, for `/stats`.
        Not cache: a flush keeps it."""
        return f"{self.prefix}stats:consistency"

    def orders_pattern(self) -> str:
        """Every ``order:{id}`` key and its companions."""
        return f"{self.prefix}order:{{*"

    def pending(self, order_id: int) -> str:
        """The pending-status overlay of one order (write-behind)."""
        return f"{self.prefix}order:{{{order_id}}}#pending"

    def pending_pattern(self) -> str:
        """A SCAN pattern matching every order's pending-status overlay."""
        return f"{self.prefix}order:{{*}}#pending"

    def pending_order(self, name: str) -> int | None:
        """The order id of a pending overlay's name, or None for any other name."""
        match = re.fullmatch(r"order:\{([0-9]+)\}#pending", name.removeprefix(self.prefix))
        return int(match.group(1)) if match and name.startswith(self.prefix) else None

    def write_stream(self) -> str:
        """The stream of accepted status changes the writer applies to PostgreSQL."""
        return f"{self.prefix}writes:status"

    def dead_letters(self) -> str:
        """Status changes the writer could not apply, each with its reason."""
        return f"{self.prefix}writes:status:dead"

    def outlives_flush(self, name: str) -> bool:
        """Keys that are no copy of PostgreSQL are never flushed: write-behind's accepted
        writes, and the price request counts warm-up needs most after a flush."""
        return (
            name.endswith("#pending")
            or name.startswith(f"{self.prefix}writes:")
            or name == self.price_requests()
            or name == self.price_requests_halved()
            or name == self.master_mark()
            or name == self.consistency()
        )

    def namespace_pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace (for a flush)."""
        return f"{self.prefix}*" if self.prefix else "*"

    def classify(self, name: str) -> KeyRef:
        """What a name found in the namespace is: a cached value of a known kind (with its
        parameters), a companion or tag set, or unknown (a kind this schema does not
        know, or a name outside the prefix)."""
        if not name.startswith(self.prefix):
            return KeyRef(UNKNOWN, {})
        bare = name[len(self.prefix) :]
        if self.outlives_flush(name):
            return KeyRef(KEPT, {})
        if "#" in bare:
            return KeyRef(COMPANION, {})
        for kind, (pattern, build) in VALUE_KINDS.items():
            match = pattern.fullmatch(bare)
            if match is None:
                continue
            params = match.groupdict()
            key = build(self, params)
            # A name no builder makes (a customer's name encoded another way, or bytes that
            # are not UTF-8) is not ours.
            return KeyRef(kind, params, key) if key.name == name else KeyRef(UNKNOWN, {})
        kind = next((k for k, pattern in _BOOKKEEPING if pattern.fullmatch(bare)), UNKNOWN)
        return KeyRef(kind, {})


@functools.lru_cache(maxsize=65_536)
def _customer_family_names(prefix: str, customer: str) -> tuple[str, str]:
    keys = KeySchema(prefix)
    family = keys.customer_family(customer)
    return family, keys.family_fence(family)


@functools.lru_cache(maxsize=16_384)
def encode_name(text: str) -> str:
    """A free-text name as a key part: percent-encoded UTF-8, nothing but
    ``A-Z a-z 0-9 _ . - ~`` and ``%`` left (no brace, colon, star or space). Remembered:
    a catch-up names the same customers' families batch after batch."""
    return quote(text, safe="")


def decode_name(part: str) -> str:
    """The name `encode_name` made `part` from (bytes that are not UTF-8 read as U+FFFD, so
    the name rebuilt from it differs: `classify` then calls it unknown)."""
    return unquote(part)


def _customer_page(keys: KeySchema, p: dict[str, str]) -> CacheKey:
    cursor = None if p["start"] == "first" else int(p["start"])
    return keys.customer_page(decode_name(p["customer"]), cursor, int(p["limit"]))


def _page(keys: KeySchema, p: dict[str, str]) -> CacheKey:
    cursor = None if p["start"] == "first" else int(p["start"])
    return keys.status_page(p["status"], cursor, int(p["limit"]))


# Every kind of cached value: its name's pattern (without the prefix) and how to build its
# CacheKey back from the pattern's groups. A new kind adds one entry here (and its
# comparison in cdc_listener.check).
Builder = Callable[[KeySchema, dict[str, str]], CacheKey]
VALUE_KINDS: Final[dict[str, tuple[re.Pattern[str], Builder]]] = {
    "order": (re.compile(r"order:\{(?P<id>[0-9]+)\}"), lambda k, p: k.order(int(p["id"]))),
    "dashboard": (re.compile(r"orders:\{dashboard\}"), lambda k, _: k.dashboard()),
    "new_orders": (re.compile(r"orders:\{new\}"), lambda k, _: k.new_orders()),
    "status_page": (
        re.compile(
            r"orders:\{status:(?P<status>[a-z_]+)\}:page:(?P<start>first|[0-9]+):(?P<limit>[0-9]+)"
        ),
        _page,
    ),
    "price": (
        re.compile(r"price:\{model:(?P<model>[0-9]+)\}:(?P<material>[0-9]+):(?P<params>.+)"),
        lambda k, p: k.price(int(p["model"]), int(p["material"]), p["params"]),
    ),
    "customer_page": (
        re.compile(
            r"orders:\{customer:(?P<customer>[A-Za-z0-9_.~%-]+)\}"
            r":page:(?P<start>first|[0-9]+):(?P<limit>[0-9]+)"
        ),
        _customer_page,
    ),
    "catalogue": (re.compile(r"catalogue:\{names\}"), lambda k, _: k.catalogue()),
    "probe": (re.compile(r"probe:\{(?P<id>[0-9]+)\}"), lambda k, p: k.probe(int(p["id"]))),
}
