"""Apply: send a batch's plan (mescache.rules.plan: every key named) in one round trip.

The applier only gathers what the plan needs from PostgreSQL (model ids, the dashboard
to refresh), queues the plan's actions and sends them.

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
from mescache.keys import KeySchema
from mescache.orders import Order
from mescache.rules import Touched, needs_model_ids, plan
from mescache.settings import CacheSettings
from mescache.store import Commands, RedisStore
from mescache.views import DASHBOARD

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
    """Invalidates (or, for hot keys, refreshes) what a batch touched, as planned."""

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
        """Send the plan of the batch's targets (mescache.rules.plan) in one round trip,
        after the whole-family flushes it names. Idempotent."""
        touched, keys, store = batch.touched, self.keys, self.store
        if not touched:
            return Applied()
        # The plan's inputs that only PostgreSQL has, read after the commit.
        model_ids = await reads.model_ids(self.pool) if needs_model_ids(touched) else []
        dashboard = None
        if touched.dashboard and self.refresh:
            # recomputed by the view's own loader, as a fill would
            dashboard = await DASHBOARD.load(self.pool, self.settings, None)
        actions = plan(
            touched,
            keys,
            self.settings,
            images=batch.images if self.refresh else None,
            model_ids=model_ids,
            dashboard=dashboard,
        )
        flushed = 0
        # Whole-family flushes are rare: their scans run before the batch's pipeline.
        for pattern in actions.flush:
            flushed += await store.flush_matching(pattern, keys.outlives_flush)

        def queue(cmds: Commands) -> None:
            store.queue_invalidations(cmds, actions.invalidate, actions.families)
            for r in actions.refresh:
                store.queue_refresh(cmds, r.key, r.body, r.ttl, r.version)

        await store.send(queue)
        stale, refreshed, families = (
            len(actions.invalidate),
            len(actions.refresh),
            len(actions.families),
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "applied",
                extra={
                    "commits": batch.commits,
                    "keys": stale + refreshed,
                    "families": families,
                    "lsn": format_lsn(batch.end_lsn),
                },
            )
        return Applied(flushed + stale, refreshed, families)
