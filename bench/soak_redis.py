"""The soak's Redis and the Redis faults it can take: one private server behind a fault
proxy (`SingleRedis`), or a local Redis Cluster of 3 masters and 3 replicas
(`ClusterRedis`, devtools.redisha).

Each names its faults in two groups, so bench.soak can keep one plan for both: `restarts`
(run where the single server's restart runs) and `silent` (held for the soak's `hold`
seconds, then lifted). Faults that make no sense on a deployment are listed in `skipped`
with the reason the soak prints.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from devtools.devstack import RedisServer, ensure_binaries
from devtools.faultproxy import FaultProxy
from devtools.redisha import LocalCluster
from mescache.keys import KeySchema


class SoakRedis(Protocol):
    """What the soak needs of its Redis deployment."""

    restarts: tuple[str, ...]
    silent: tuple[str, ...]
    skipped: dict[str, str]  # fault -> why it does not run here

    @property
    def url(self) -> str:
        """REDIS_URL for the soak's own clients (the checker, the prober): never proxied."""

    @property
    def process_url(self) -> str:
        """REDIS_URL for the API and the listener."""

    async def start(self) -> None: ...

    async def inject(self, fault: str) -> None: ...

    def lift(self, fault: str) -> None:
        """End a silent fault."""

    async def after_recovery(self, fault: str) -> None:
        """Put the deployment back in shape once the stack has recovered (the load on)."""

    async def close(self) -> None: ...


class SingleRedis:
    """One redis-server, reached by the API and the listener through a fault proxy."""

    restarts: tuple[str, ...] = ("restart redis",)
    silent: tuple[str, ...] = ("redis black-holed",)

    def __init__(self, workdir: Path) -> None:
        self.skipped: dict[str, str] = {}
        _, binary = ensure_binaries()
        self.server = RedisServer(workdir / "redis", binary)
        self.proxy: FaultProxy | None = None

    @property
    def url(self) -> str:
        return self.server.url()

    @property
    def process_url(self) -> str:
        assert self.proxy is not None, "started"
        return self.proxy.url_for(self.server.url())

    async def start(self) -> None:
        self.server.start()
        self.proxy = FaultProxy("127.0.0.1", self.server.port)
        await self.proxy.start()

    async def inject(self, fault: str) -> None:
        assert self.proxy is not None, "started"
        if fault == "restart redis":
            await asyncio.to_thread(self._restart)
        elif fault == "redis black-holed":
            self.proxy.black_hole()

    def _restart(self) -> None:
        self.server.stop()
        self.server.start()  # same port, empty: nothing is persisted

    def lift(self, fault: str) -> None:
        """New flows pass again; the black-holed ones stay dead until their owner gives
        them up (as after a firewall that forgot them)."""
        if self.proxy is not None:
            self.proxy.heal()

    async def after_recovery(self, fault: str) -> None:
        return None

    async def close(self) -> None:
        if self.proxy is not None:
            await self.proxy.close()
        self.server.stop()


class ClusterRedis:
    """A local Redis Cluster (3 masters, 3 replicas), reached directly by every process:
    the cluster client learns each node's address from the cluster itself."""

    restarts: tuple[str, ...] = ("fail over the dashboard's master", "kill -9 a master")
    silent: tuple[str, ...] = ()

    def __init__(self, workdir: Path) -> None:
        self.skipped = {
            "restart redis": "a killed cluster node comes back as a replica (the kill -9 row)",
            "redis black-holed": "the cluster client reaches each node at the address the"
            " cluster announces, past any proxy",
        }
        self.cluster = LocalCluster(workdir / "redis-cluster")
        self.keys = KeySchema()

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def process_url(self) -> str:
        return self.cluster.url

    async def start(self) -> None:
        await asyncio.to_thread(self.cluster.start)

    async def inject(self, fault: str) -> None:
        # Each waits until the replica is promoted as every node sees it: the recovery
        # the soak measures includes the takeover.
        if fault == "fail over the dashboard's master":
            await asyncio.to_thread(self._fail_over_dashboard)
        elif fault == "kill -9 a master":
            await asyncio.to_thread(self._kill_other_master)

    def _fail_over_dashboard(self) -> None:
        self.cluster.failover(self.cluster.master_for(self.keys.dashboard().name))

    def _kill_other_master(self) -> None:
        """Kill -9 a master other than the dashboard's, so both faults hit other shards."""
        dashboard = self.cluster.master_for(self.keys.dashboard().name)
        victim = next(m for m in self.cluster.primaries() if m.port != dashboard.port)
        self.cluster.kill_master(victim)

    def lift(self, fault: str) -> None:
        return None

    async def after_recovery(self, fault: str) -> None:
        """The killed node restarts and rejoins as its old shard's replica."""
        await asyncio.to_thread(self.cluster.heal)

    async def close(self) -> None:
        self.cluster.stop()
