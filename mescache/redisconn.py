"""Redis clients from one URL: a single server, a Redis Cluster, or a master found through
Sentinel. Every process builds its clients here, so each runs on any of the three.

URL forms (the ``REDIS_URL`` setting):

- ``redis://host:port/db``, ``rediss://...``, ``unix:///path?db=N``: one server.
- ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` with
  TLS): a Redis Cluster; the nodes listed are only where discovery starts.
- ``redis+sentinel://[user:password@]host:port[,host:port...]/master[/db]``
  (``rediss+sentinel://``): the master Sentinel names ``master``; the credentials are the
  data nodes' (sentinels are asked without). Every new connection asks the sentinels
  where the master is, so a failover is followed as soon as the old connections break
  (a killed master) or answer READONLY (a demoted one).

Every client fails fast (the contract of `make_redis`): timeouts on every call, no
retries of a failed call; the caller decides what a failure means (the API's breaker, the
listener's reconnect from its confirmed position).

One code path: `make_redis` is typed as `redis.asyncio.Redis` whatever it returns, since
a ``RedisCluster`` takes the same command calls. What differs on a cluster, for code that
goes past plain commands (check with `is_cluster`):

- no ``connection_pool`` attribute (each node has its own connections) and the
  connection limit is per node: past it a call fails (``MaxConnectionsError``) instead of
  waiting for a free connection as the single-server and Sentinel pools do;
- a pipeline is split into one pipeline per node, never atomic across slots; a
  transaction (MULTI) or a script may touch keys of one hash slot only; without retries
  a pipeline that failed on a dead master does not reload the slot map (a plain command
  does): call `refresh_topology` after such a failure, or every later pipeline goes to
  the dead node;
- slot map errors (``SlotNotCoveredError``, ``RedisClusterException``) are no
  ``RedisError``: catch both;
- ``SCAN`` (``scan_iter``) walks every primary in turn; ``KEYS``, ``FLUSHDB``, ``INFO`` and
  ``DBSIZE`` go to a default node unless given ``target_nodes``;
- pub/sub: plain ``PUBLISH`` is broadcast over the cluster bus to every node; sharded
  pub/sub (``SPUBLISH`` / ``SSUBSCRIBE``, Redis 7) stays on the shard owning the
  channel's slot, and a failover or slot move of that shard ends the subscription
  (a ``sunsubscribe`` or a broken connection): subscribers must subscribe again
  (`open_pubsub`, `subscribe` and the listener's publisher choose the commands);
- only database 0 exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, cast
from urllib.parse import quote, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Connection, Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPubSub
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from mescache import resp
from mescache.errors import Fatal

_CLUSTER: Final = {"redis+cluster": False, "rediss+cluster": True}  # scheme: TLS
_SENTINEL: Final = {"redis+sentinel": False, "rediss+sentinel": True}

Kind = Literal["single", "cluster", "sentinel"]


class BadRedisUrl(Fatal, ValueError):
    """REDIS_URL is not one of the forms mescache.redisconn documents."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a URL names: the kind of deployment and where to find it."""

    kind: Kind
    url: str  # the URL as given (single: handed to redis-py as is)
    nodes: tuple[tuple[str, int], ...] = ()  # cluster: startup nodes; sentinel: sentinels
    master: str = ""  # sentinel: the master's name
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """The deployment a REDIS_URL names; BadRedisUrl (never echoing a password) if none."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in {"redis", "rediss", "unix"}:
        return RedisTarget("single", url)
    if scheme not in _CLUSTER and scheme not in _SENTINEL:
        raise BadRedisUrl(
            "REDIS_URL must start with redis://, rediss://, unix://, redis+cluster:// or"
            " redis+sentinel://"
        )
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_host_port(item) for item in hostlist.split(",") if item)
    if not nodes:
        raise BadRedisUrl(f"{scheme}:// needs at least one host:port")
    path = [p for p in parts.path.split("/") if p]
    common: dict[str, Any] = {
        "url": url,
        "nodes": nodes,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    if scheme in _CLUSTER:
        if path:
            raise BadRedisUrl("a Redis Cluster has database 0 only: no /path in the URL")
        return RedisTarget("cluster", tls=_CLUSTER[scheme], **common)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise BadRedisUrl(f"{scheme}:// needs the master's name: .../mymaster[/db]")
    db = int(path[1]) if len(path) == 2 else 0
    return RedisTarget("sentinel", master=unquote(path[0]), db=db, tls=_SENTINEL[scheme], **common)


def node_url(target: RedisTarget, host: str, port: int) -> str:
    """The plain URL of one node of a cluster (or of the master Sentinel names), with the
    deployment's credentials and TLS: for a connection to that node alone."""
    auth = ""
    if target.username or target.password:
        auth = quote(target.username or "", safe="")
        if target.password:
            auth += ":" + quote(target.password, safe="")
        auth += "@"
    where = f"[{host}]" if ":" in host else host
    return f"{'rediss' if target.tls else 'redis'}://{auth}{where}:{port}/{target.db}"


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BadRedisUrl("each node must be host:port")
    return host.strip("[]"), int(port)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master lookup on every connect, with the blocking pool's wait for a free
    connection (the single-server behaviour) instead of an error past the limit."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """The data node's connections and the sentinels' too: each client of ours has a
        Sentinel of its own, whose connections nothing else would close."""
        await super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.connection_pool.disconnect(inuse_connections)


def _no_retry() -> Retry:
    # The asyncio Retry: redis-py 8 warns (an error under our warning filter) when an
    # asyncio client is handed the synchronous one.
    return Retry(NoBackoff(), 0)


class PackingConnection(Connection):
    """redis-py's TCP connection with commands packed by :func:`mescache.resp.pack`: the
    same bytes in one pass (a command of many keys no longer costs a copy per key)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command's RESP bytes in one buffer (redis-py's packing when not plain UTF-8)."""
        encoder = self.encoder
        if encoder.encoding == "utf-8" and encoder.encoding_errors == "strict":
            packed = resp.pack(args)
            if packed is not None:
                return [packed]
        return super().pack_command(*args)


def make_redis(url: str, timeout: float, max_connections: int, *, resp2: bool = False) -> Redis:
    """A client whose calls fail fast: the caller decides what a failure means. `resp2`:
    speak RESP2 (a subscriber that reads messages as replies, CLIENT TRACKING's redirect)."""
    return _client(parse_redis_url(url), timeout, max_connections, {"protocol": 2} if resp2 else {})


def make_subscriber(url: str, connect_timeout: float) -> Redis:
    """A client for a long-lived subscription: reads block (no socket timeout), connects
    are bounded, and an idle connection is checked every 30 s."""
    extra: dict[str, Any] = {"health_check_interval": 30}
    target = parse_redis_url(url)
    if target.kind == "single":
        return Redis.from_url(
            url, socket_connect_timeout=max(connect_timeout, 1.0), health_check_interval=30
        )
    return _client(target, None, 8, extra, connect_timeout=max(connect_timeout, 1.0))


def _client(
    target: RedisTarget,
    timeout: float | None,
    max_connections: int,
    extra: dict[str, Any],
    connect_timeout: float | None = None,
) -> Redis:
    connect = connect_timeout if connect_timeout is not None else timeout
    if target.kind == "single":
        # Plain TCP URLs only: a connection class given here would replace TLS's or a socket's.
        plain = target.url.startswith("redis://")
        packing: dict[str, Any] = {"connection_class": PackingConnection} if plain else {}
        pool = BlockingConnectionPool.from_url(
            target.url,
            max_connections=max_connections,
            # Under load, wait for a free connection rather than fail; a long wait means a
            # slow Redis, which is a failure like any other.
            timeout=(timeout or 5.0) * 2,
            socket_timeout=timeout,
            socket_connect_timeout=connect,
            # A call that timed out drops its connection (redis-py disconnects on a
            # timeout), so a silent one is never reused; keepalives let the kernel notice
            # idle dead ones.
            socket_keepalive=True,
            # No retries: one failing call trips the API's breaker instead of tripling the
            # wait.
            retry=_no_retry(),
            **packing,
            **extra,
        )
        return Redis.from_pool(pool)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            max_connections=max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=connect,
            socket_keepalive=True,
            # No retried calls; a MOVED or ASK redirect is still followed (it is not a
            # failure), and a failed call makes the next one reload the slot map.
            retry=_no_retry(),
            ssl=target.tls,
            **auth,
            **extra,
        )
        return cast(Redis, cluster)
    sentinel = Sentinel(
        list(target.nodes),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": connect},
    )
    return cast(
        Redis,
        sentinel.master_for(
            target.master,
            redis_class=Redis,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=max_connections,
            timeout=(timeout or 5.0) * 2,
            socket_timeout=timeout,
            socket_connect_timeout=connect,
            socket_keepalive=True,
            retry=_no_retry(),
            db=target.db,
            ssl=target.tls,
            **auth,
            **extra,
        ),
    )


def is_cluster(client: object) -> bool:
    """Whether a client from `make_redis` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def open_pubsub(client: Redis) -> PubSub:
    """A pub/sub object for `client` (on a cluster, one that routes sharded channels)."""
    if is_cluster(client):
        return cast(RedisCluster, client).pubsub()
    return client.pubsub()


async def subscribe(pubsub: PubSub, channel: str) -> None:
    """Subscribe to the changes channel: sharded (SSUBSCRIBE) on a cluster."""
    if isinstance(pubsub, ClusterPubSub):
        await _initialized(pubsub.cluster)
        await pubsub.ssubscribe(channel)
    else:
        await pubsub.subscribe(channel)


async def next_message(pubsub: PubSub, wait: float) -> dict[str, Any] | None:
    """The next pub/sub message (subscription replies included, so that a subscription
    the server ended shows up), or None after `wait` seconds."""
    if isinstance(pubsub, ClusterPubSub):
        message: dict[str, Any] | None = await pubsub.get_sharded_message(timeout=wait)
    else:
        message = await pubsub.get_message(timeout=wait)
    return message


async def refresh_topology(client: Redis) -> None:
    """After a failure on a cluster, reload the slot map before trying again (pub/sub
    does not do it by itself); nothing to do on the other kinds."""
    if is_cluster(client):
        cluster = cast(RedisCluster, client)
        await _initialized(cluster)
        # A topology reload drops the nodes gone from the map (their idle connections
        # closed at once, the busy ones when released) and keeps the others.
        await cluster.nodes_manager.initialize()


async def _initialized(cluster: RedisCluster) -> None:
    # redis-py marks a cluster client initialized only in its own start-up (the first
    # plain command); pub/sub and a bare slot map reload skip it, and ``aclose`` of a
    # client never marked closes nothing, leaving every socket they opened to the
    # collector. A no-op once done.
    await cluster.initialize()
