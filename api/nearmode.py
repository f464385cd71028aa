"""The ``NEAR_CACHE`` setting: builds a process's near cache, checked or tracked (with its
invalidation channel, api.tracking), and the series that say how its hits were answered.

Series (prefixed ``orders_api_``): ``near_hits_total{mode}`` (tracked: no round trip;
checked: the token confirmed by Redis), ``near_channel_proven`` (1 while a heartbeat
within the bound vouches for the channel; always 0 in checked mode and on a cluster),
``near_fallbacks_total`` (hits of a tracked copy that had to be checked because the
channel was not proven), ``near_channel_losses_total{reason}`` (lost: an error or a closed
connection; silent: a heartbeat never came back) and ``near_flushes_total``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.cluster_tracking import ClusterTracking
from api.nearcache import NearCache
from api.settings import ApiSettings
from api.tracking import InvalidationChannel, TrackingChannel
from mescache.keys import KeySchema
from mescache.redisconn import parse_redis_url


def near_cache(cfg: ApiSettings, keys: KeySchema, registry: CollectorRegistry) -> NearCache:
    """The near cache the settings ask for, its series registered in `registry`; a tracked
    one starts its channel with `NearCache.start`."""
    channel = None
    if cfg.near_cache == "tracked" and cfg.near_cache_max_bytes > 0:
        channel = _channel(cfg, keys)
    near = NearCache(cfg.near_cache_min_bytes, cfg.near_cache_max_bytes, channel)
    registry.register(NearSeries(near))
    return near


def _channel(cfg: ApiSettings, keys: KeySchema) -> InvalidationChannel:
    """The invalidation channel of tracked hits: one, or one per primary of a cluster."""
    process = secrets.token_hex(6)
    if parse_redis_url(cfg.redis_url).kind == "cluster":
        return ClusterTracking(
            cfg.redis_url,
            cfg.redis_timeout,
            lambda tag: keys.near_beat(process, tag),
            bound=cfg.near_tracking_bound,
            beat=cfg.near_tracking_beat,
        )
    return TrackingChannel(
        cfg.redis_url,
        cfg.redis_timeout,
        keys.near_beat(process),
        bound=cfg.near_tracking_bound,
        beat=cfg.near_tracking_beat,
    )


class NearSeries(Collector):
    """The near cache's counts, read when scraped."""

    def __init__(self, near: NearCache) -> None:
        self.near = near

    def collect(self) -> Iterator[Metric]:
        """The near hits by mode and the channel's state, read at scrape time."""
        counts, channel = self.near.counts, self.near.channel
        hits = CounterMetricFamily(
            "orders_api_near_hits",
            "Reads answered from the process's near copy: tracked (no round trip) or"
            " checked (Redis confirmed the copy's token)",
            labels=["mode"],
        )
        hits.add_metric(["tracked"], counts.tracked)
        hits.add_metric(["checked"], counts.checked)
        yield hits
        yield GaugeMetricFamily(
            "orders_api_near_channel_proven",
            "1 while a heartbeat within NEAR_TRACKING_BOUND vouches for the invalidation"
            " channel (near hits make no round trip), else 0",
            value=1 if channel is not None and channel.proven_now else 0,
        )
        yield CounterMetricFamily(
            "orders_api_near_fallbacks",
            "Hits of a tracked near copy checked with Redis because the channel was not"
            " proven at that moment",
            value=counts.fallbacks,
        )
        losses = CounterMetricFamily(
            "orders_api_near_channel_losses",
            "Invalidation channel generations ended: lost (an error, a closed connection),"
            " silent (a heartbeat did not come back)",
            labels=["reason"],
        )
        for reason in ("lost", "silent"):  # 0 in checked mode: the series always exist
            losses.add_metric([reason], channel.losses[reason] if channel is not None else 0)
        yield losses
        yield CounterMetricFamily(
            "orders_api_near_flushes",
            "Flushes the channel reported (every near copy dropped)",
            value=channel.flushes if channel is not None else 0,
        )
