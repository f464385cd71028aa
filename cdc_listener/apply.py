"""Apply: turn a batch of committed changes into Redis actions, sent in one round trip.

Delivery contract: at least once. The caller confirms a position to PostgreSQL only after
`Applier.apply` returned for every commit up to it; after a crash the server resends from
the last confirmed commit, so every action here must be idempotent (mescache.store's
scripts are). Redis or database errors propagate: the listener reconnects and resumes
from the confirmed position instead of skipping a batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cdc_listener.metrics import Applied
from cdc_listener.replication import format_lsn
from mescache import reads
from mescache.db import Pool
from mescache.keys import CacheKey, KeySchema
from mescache.orders import Order, dump_order
from mescache.rules import Touched
from mescache.settings import CacheSettings
from mescache.store import Commands, RedisStore, lsn_version

log = logging.getLogger("cdc_listener.apply")


@dataclass(slots=True)
class Batch:
    """Committed transactions not yet applied, merged: keys are coalesced."""

    touched: Touched = field(default_factory=Touched)
    # For refresh: the latest row image of each touched order (None: deleted or incomplete)
    # and the commit position it belongs to.
    images: dict[int, tuple[Order | None, int]] = field(default_factory=dict)
    end_lsn: int = 0
    commits: int = 0
    # Whether a commit in it may still be invisible to new snapshots, so the delayed second
    # pass must repeat it (false for a backlog of commits made long before they reached us).
    recent: bool = False
    # When the batch's oldest change was committed (Unix seconds), for the lag it reports.
    oldest_commit: float | None = None
    # Seconds from that commit until the batch's first application to Redis.
    lag: float | None = None
    changes: int = 0  # row changes (outbox rows), for the metrics

    def add(
        self,
        touched: Touched,
        images: dict[int, Order | None],
        end_lsn: int,
        committed_at: float | None = None,
    ) -> None:
        """Merge what one transaction touched, with the row images a refresh may use."""
        self.touched.update(touched)
        for order_id, image in images.items():
            self.images[order_id] = (image, end_lsn)
        self.end_lsn = end_lsn
        self.commits += 1
        if self.oldest_commit is None:
            self.oldest_commit = committed_at

    def first_applied(self, now: float) -> None:
        """Record the lag (oldest commit to now) the first time the batch reached Redis."""
        if self.lag is None and self.oldest_commit is not None:
            self.lag = max(0.0, now - self.oldest_commit)

    def merge(self, later: Batch) -> None:
        """Add a later batch: its images replace older ones of the same order."""
        self.touched.update(later.touched)
        self.images.update(later.images)
        self.end_lsn = max(self.end_lsn, later.end_lsn)
        self.commits += later.commits
        self.recent |= later.recent
        if later.oldest_commit is not None and (
            self.oldest_commit is None or later.oldest_commit < self.oldest_commit
        ):
            self.oldest_commit = later.oldest_commit

    def bound(self, max_keys: int) -> None:
        """Past `max_keys` keys of a kind, touch the whole family instead (and refresh nothing)."""
        self.touched.bound(max_keys)
        if self.touched.all_orders:
            self.images.clear()


def merge_batches(batches: list[Batch], max_keys: int) -> list[Batch]:
    """Consecutive batches merged in order (a later image wins), each merge staying within
    `max_keys` order keys. A batch that is still to be rechecked is never changed."""
    groups: list[list[Batch]] = []
    size = 0
    for batch in batches:
        if not batch.commits:
            continue
        keys = len(batch.touched.orders)
        if groups and size + keys <= max_keys:
            groups[-1].append(batch)
            size += keys
        else:
            groups.append([batch])
            size = keys
    merged: list[Batch] = []
    for group in groups:
        if len(group) == 1:
            merged.append(group[0])
            continue
        combined = Batch()
        for batch in group:
            combined.merge(batch)
        merged.append(combined)
    return merged


class Applier:
    """Invalidates (or, for hot keys, refreshes) what a batch touched."""

    def __init__(
        self,
        store: RedisStore,
        keys: KeySchema,
        settings: CacheSettings,
        refresh: bool,
        pool: Pool,
    ) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self.refresh = refresh
        self.pool = pool

    async def apply(self, batch: Batch) -> Applied:
        """Send the batch's invalidations and refreshes to Redis in one round trip (per node on a
        cluster); what was sent."""
        touched, keys, store = batch.touched, self.keys, self.store
        if not touched:
            return Applied()
        flushed = 0
        # Whole-table events are rare: their scans run before the batch's pipeline.
        if touched.all_orders:
            flushed = await store.flush_matching(keys.orders_pattern(), keys.outlives_flush)
        if touched.all_customers:
            flushed += await store.flush_matching(keys.customers_pattern())
        dashboard = None
        if touched.dashboard and self.refresh:
            dashboard = await reads.dashboard_json(self.pool)

        rows: list[tuple[CacheKey, bytes, str]] = []  # refreshed orders: key, body, version
        stale: list[tuple[str, str, str]] = []
        order_names = keys.order_names
        for order_id in touched.orders:
            if self.refresh:
                image, lsn = batch.images.get(order_id, (None, 0))
                if image is not None:
                    rows.append((keys.order(order_id), dump_order(image), lsn_version(lsn)))
                    continue
            stale.append(order_names(order_id))
        others: list[CacheKey] = []
        if touched.newest:
            others.append(keys.new_orders())
        if touched.dashboard and dashboard is None:
            others.append(keys.dashboard())
        if touched.catalogue:
            others.append(keys.catalogue())
        others += [keys.probe(p) for p in sorted(touched.probes)]
        stale += [(key.name, key.fence, key.lease) for key in others]
        families = [keys.status_family(s) for s in sorted(touched.statuses)]
        if not touched.all_customers:
            families += [keys.customer_family(c) for c in sorted(touched.customers)]
        families += [keys.price_family_of_model(m) for m in sorted(touched.price_models)]
        families += await self._catalogue_families(touched)
        ttl_order, ttl_dashboard = self.settings.ttl_order, self.settings.ttl_dashboard

        def queue(cmds: Commands) -> None:
            for key, body, version in rows:
                store.queue_refresh(cmds, key, body, ttl_order, version)
            store.queue_invalidate_names(cmds, stale)
            for family in families:
                store.queue_invalidate_family(cmds, family, keys.family_fence(family))
            if dashboard is not None:
                store.queue_refresh(cmds, keys.dashboard(), dashboard, ttl_dashboard, None)

        await store.send(queue)
        refreshed = len(rows) + (dashboard is not None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "applied",
                extra={
                    "commits": batch.commits,
                    "keys": len(stale) + refreshed,
                    "families": len(families),
                    "lsn": format_lsn(batch.end_lsn),
                },
            )
        return Applied(flushed + len(stale), refreshed, len(families))

    async def _catalogue_families(self, touched: Touched) -> list[str]:
        """The price families a material or pricing rule change moves. Each model keeps
        them in its own slot, so they move in every model's. The ids are read after the
        commit: they include every model whose prices could be cached (a deleted model's
        were made unreachable by its own deletion)."""
        if not (touched.price_materials or touched.all_prices):
            return []
        keys = self.keys
        families: list[str] = []
        for model in await reads.model_ids(self.pool):
            if touched.all_prices:
                families.append(keys.all_prices(model))
            else:
                families += [
                    keys.price_family_of_material(material, model)
                    for material in sorted(touched.price_materials)
                ]
        return families
