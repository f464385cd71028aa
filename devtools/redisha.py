"""Real Redis Cluster and Sentinel deployments on loopback, for the tests and the soak.

- `LocalCluster`: 3 masters and 3 replicas (``redis-server --cluster-enabled yes``, joined
  with ``redis-cli --cluster create``), on free ports no higher than 55535, since the
  cluster bus listens on the port + 10000. Failovers: `failover` (``CLUSTER FAILOVER
  FORCE`` on a replica) and `kill_master` (kill -9, then the replica's promotion);
  `heal` brings killed nodes back as replicas.
- `LocalSentinel`: a master, a replica and three ``redis-server FILE --sentinel``
  processes; `kill_master` kills the master and waits for the promotion, after
  `cut_replication` if the test needs a write the replica never got.

Everything lives under the work directory given; nothing persists (no RDB, no AOF), so a
restarted node comes back empty and resynchronises from its master. Every wait has a
deadline and raises HaError with what it was waiting for.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

import redis

from devtools.devstack import StackError, ensure_binaries

MAX_PORT: Final = 55535  # the cluster bus is the port + 10000, and must stay under 65536
_BUS_OFFSET: Final = 10_000
_LOWEST_PORT: Final = 10_000
_WAIT: Final = 30.0


class HaError(StackError):
    """A local cluster or Sentinel set-up did not reach the state asked for in time."""


def free_port_pair() -> int:
    """A loopback port p <= 55535 with p and p + 10000 both free, both below the kernel's
    ephemeral range where it leaves room: a port free now but inside that range can be
    taken by any outgoing connection before the node binds it (seen as a node that exits
    at start)."""
    top = min(MAX_PORT, _ephemeral_low() - 1 - _BUS_OFFSET)
    if top - _LOWEST_PORT < 1000:
        top = MAX_PORT
    for _ in range(200):
        port = random.randint(_LOWEST_PORT, top)
        if all(_bindable(p) for p in (port, port + _BUS_OFFSET)):
            return port
    raise HaError(f"no free port pair below {top}")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default where unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(what: str, check: Callable[[], bool], timeout: float = _WAIT) -> None:
    """Poll `check` until true; HaError naming `what` past the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise HaError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Node:
    """One redis-server process (data node or sentinel) on 127.0.0.1."""

    workdir: Path
    binary: str
    port: int
    args: tuple[str, ...] = ()
    config: Path | None = None  # a sentinel's configuration file (sentinel rewrites it)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *more: str) -> None:
        """Start the node (extra arguments in `more`) and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        head = [self.binary] if self.config is None else [self.binary, str(self.config)]
        self.proc = subprocess.Popen(
            [
                *head,
                *(["--sentinel"] if self.config is not None else []),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)),
                *("--logfile", str(self.workdir / "redis.log")),
                *self.args,
                *more,
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(f"redis on port {self.port}", self._started, 15)

    def _started(self) -> bool:
        """Whether the node answers PING; HaError at once if it exited (its log's end)."""
        if self.proc is not None and self.proc.poll() is not None:
            log = self.workdir / "redis.log"
            tail = log.read_text(errors="replace").splitlines()[-3:] if log.exists() else []
            raise HaError(f"redis on port {self.port} exited at start: {' | '.join(tail)}")
        return self.pings()

    @property
    def alive(self) -> bool:
        """Whether the node's process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Kill -9: no goodbye to replicas, sentinels or cluster peers."""
        if self.proc is not None and self.alive:
            self.proc.send_signal(signal.SIGCONT)  # a paused process must die too
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the node is silent, its connections stay open."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A plain client of this node with short timeouts."""
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def call(self, *args: str | int) -> object:
        """One command on this node; its reply."""
        with self.client() as r:
            return r.execute_command(*args)

    def info(self, section: str) -> dict[str, object]:
        """One section of the node's INFO."""
        with self.client() as r:
            return cast(dict[str, object], r.info(section))

    def pings(self) -> bool:
        """Whether the node runs and answers PING."""
        return self.alive and bool(self.call("PING"))


def _redis_cli() -> str:
    _, server = ensure_binaries()
    return str(Path(server).with_name("redis-cli"))


@dataclass
class LocalCluster:
    """A Redis Cluster of `masters` masters with one replica each."""

    workdir: Path
    masters: int = 3
    nodes: list[Node] = field(default_factory=list)

    def start(self) -> None:
        """Start the nodes, form the cluster and wait until every slot is served."""
        _, binary = ensure_binaries()
        for i in range(self.masters * 2):
            port = free_port_pair()
            node = Node(
                self.workdir / f"node{i}",
                binary,
                port,
                (
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    # A dead master is noticed within a second; any replica may replace it.
                    *("--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"),
                    *("--save", "", "--appendonly", "no"),
                ),
            )
            node.start()
            self.nodes.append(node)
        subprocess.run(
            [
                _redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_healthy()

    @property
    def url(self) -> str:
        """The REDIS_URL of this cluster (mescache.redisconn's cluster form)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        """Kill every node."""
        for node in self.nodes:
            node.kill()

    def _roles(self, seen_by: Node | None = None) -> dict[int, tuple[str, int | None]]:
        """Port -> (role, its master's port) of the nodes not failed, as one node sees
        the cluster (a live one if not given)."""
        live = seen_by or next(n for n in self.nodes if n.alive)
        lines = cast(bytes | str, live.call("CLUSTER", "NODES"))
        text = lines.decode() if isinstance(lines, bytes) else lines
        by_id: dict[str, int] = {}
        rows = [line.split() for line in text.splitlines() if line.strip()]
        for row in rows:
            by_id[row[0]] = int(row[1].split("@")[0].rsplit(":", 1)[1])
        roles: dict[int, tuple[str, int | None]] = {}
        for row in rows:
            port, flags = by_id[row[0]], row[2].split(",")
            if "fail" in flags or "fail?" in flags:
                continue
            role = "master" if "master" in flags else "replica"
            roles[port] = (role, by_id.get(row[3]) if row[3] != "-" else None)
        return roles

    def node(self, port: int) -> Node:
        """The node listening on `port`."""
        return next(n for n in self.nodes if n.port == port)

    def primaries(self) -> list[Node]:
        """The masters now, as a live node sees the cluster."""
        roles = self._roles()
        return [self.node(p) for p, (role, _) in roles.items() if role == "master"]

    def replica_of(self, master: Node) -> Node:
        """The replica of `master` now."""
        roles = self._roles()
        for port, (role, of) in roles.items():
            if role == "replica" and of == master.port and self.node(port).alive:
                return self.node(port)
        raise HaError(f"no live replica of the master on port {master.port}")

    def master_for(self, name: str) -> Node:
        """The master holding the slot of a key or (sharded) channel name."""
        slot = int(cast(int, self.nodes[0].call("CLUSTER", "KEYSLOT", name)))
        for master in self.primaries():
            with master.client() as r:
                if r.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) is not None and (
                    _owns(cast(list[list[object]], r.execute_command("CLUSTER", "SLOTS")), slot)
                    == master.port
                ):
                    return master
        raise HaError(f"no master owns slot {slot}")

    def failover(self, master: Node) -> Node:
        """``CLUSTER FAILOVER FORCE`` on the master's replica; the promoted node."""
        replica = self.replica_of(master)
        replica.call("CLUSTER", "FAILOVER", "FORCE")
        self._wait_promoted(replica)
        return replica

    def kill_master(self, master: Node) -> Node:
        """Kill -9 of a master; returns its replica once promoted and serving."""
        replica = self.replica_of(master)
        master.kill()
        self._wait_promoted(replica)
        return replica

    def _wait_promoted(self, node: Node) -> None:
        def agreed() -> bool:
            return node.info("replication").get("role") == "master" and all(
                self._roles(n).get(node.port, ("", None))[0] == "master"
                for n in self.nodes
                if n.alive
            )

        wait_until(f"node {node.port} promoted, as every node sees it", agreed)
        self.wait_healthy(require_all=False)

    def heal(self) -> None:
        """Restart every killed node (it rejoins as a replica) and wait for full health."""
        for node in self.nodes:
            if not node.alive:
                node.start()
        self.wait_healthy()

    def wait_healthy(self, require_all: bool = True) -> None:
        """Every live node sees cluster_state:ok and all slots served; with `require_all`,
        all nodes up and every master with a replica whose link is up."""

        def ok() -> bool:
            for node in self.nodes:
                if not node.alive:
                    if require_all:
                        return False
                    continue
                info = cast(str | bytes, node.call("CLUSTER", "INFO"))
                text = info.decode() if isinstance(info, bytes) else info
                if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                    return False
            if not require_all:
                return True
            roles = self._roles()
            if len(roles) != len(self.nodes):
                return False
            replicas = [self.node(p) for p, (role, _) in roles.items() if role == "replica"]
            return len(replicas) == self.masters and all(
                r.info("replication").get("master_link_status") == "up" for r in replicas
            )

        wait_until("a healthy cluster", ok)

    def flush(self) -> None:
        """FLUSHALL on every master."""
        for master in self.primaries():
            master.call("FLUSHALL")


def _owns(slots: Iterable[list[object]], slot: int) -> int | None:
    for entry in slots:
        start, end, primary = int(cast(int, entry[0])), int(cast(int, entry[1])), entry[2]
        if start <= slot <= end:
            return int(cast(list[int], primary)[1])
    return None


@dataclass
class LocalSentinel:
    """A master, a replica and three sentinels watching them under `name`."""

    workdir: Path
    name: str = "mes"
    data: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    def start(self) -> None:
        """Start the master, its replica and the sentinels; wait until they agree."""
        _, binary = ensure_binaries()
        plain = ("--save", "", "--appendonly", "no")
        master = Node(self.workdir / "data0", binary, free_port_pair(), plain)
        master.start()
        replica = Node(self.workdir / "data1", binary, free_port_pair(), plain)
        replica.start("--replicaof", "127.0.0.1", str(master.port))
        self.data = [master, replica]
        wait_until(
            "the replica in sync",
            lambda: replica.info("replication").get("master_link_status") == "up",
        )
        for i in range(3):
            folder = self.workdir / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"sentinel monitor {self.name} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {self.name} 1000\n"
                f"sentinel failover-timeout {self.name} 5000\n"
                f"sentinel parallel-syncs {self.name} 1\n",
                encoding="utf-8",
            )
            sentinel = Node(folder, binary, free_port_pair(), config=config)
            sentinel.start()
            self.sentinels.append(sentinel)
        self._wait_watching()

    @property
    def url(self) -> str:
        """The REDIS_URL of this set-up (mescache.redisconn's Sentinel form)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.name}"

    def stop(self) -> None:
        """Kill the sentinels and the data nodes."""
        for node in [*self.sentinels, *self.data]:
            node.kill()

    def _wait_watching(self) -> None:
        """Every sentinel knows the master, its replica and the two other sentinels."""

        def ok() -> bool:
            for s in self.sentinels:
                if len(cast(list[object], s.call("SENTINEL", "REPLICAS", self.name))) < 1:
                    return False
                if len(cast(list[object], s.call("SENTINEL", "SENTINELS", self.name))) < 2:
                    return False
            return True

        wait_until("the sentinels watching", ok)

    def _announced(self) -> set[int]:
        ports = set()
        for s in self.sentinels:
            if s.alive:
                addr = cast(list[bytes], s.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name))
                ports.add(int(addr[1]))
        return ports

    def master(self) -> Node:
        """The data node every sentinel names as master."""
        ports = self._announced()
        if len(ports) != 1:
            raise HaError(f"sentinels disagree on the master: {sorted(ports)}")
        return next(n for n in self.data if n.port in ports)

    def replica(self) -> Node:
        """The data node that is not the master now."""
        master = self.master()
        return next(n for n in self.data if n is not master)

    def cut_replication(self) -> None:
        """Until the next `kill_master`, the master acknowledges writes its replica never
        gets: the replica is paused and its replication link closed."""
        master, replica = self.master(), self.replica()
        replica.pause()
        master.call("CLIENT", "KILL", "TYPE", "replica")
        wait_until(
            "the replica disconnected",
            lambda: int(cast(int, master.info("replication").get("connected_slaves", 0))) == 0,
        )

    def kill_master(self) -> Node:
        """Kill -9 of the master; returns the replica once every sentinel names it."""
        master, replica = self.master(), self.replica()
        master.kill()
        replica.resume()
        wait_until(
            "the replica promoted",
            lambda: (
                self._announced() == {replica.port}
                and replica.info("replication").get("role") == "master"
            ),
        )
        return replica

    def heal(self) -> None:
        """Restart a killed data node as the current master's replica.

        Restarted as a plain master, the node would wait for Sentinel to convert it, which
        Sentinel does only after seconds of stable role reports and never in its TILT mode
        (entered whenever its timer runs late, as on a loaded machine): the wait could
        outlast any deadline. Sentinel learns of the replica from the master's INFO.
        """
        master = self.master()
        for node in self.data:
            if not node.alive:
                node.start("--replicaof", "127.0.0.1", str(master.port))
        wait_until(
            "the replica back in sync",
            lambda: all(
                n.info("replication").get("master_link_status") == "up"
                for n in self.data
                if n is not master
            ),
        )
        self._wait_watching()
