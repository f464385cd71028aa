"""Applies the ordered migrations in sql/migrations to a database, each once.

Migrations are plain SQL files named NNN_name.sql, applied in name order inside one
transaction each and recorded in schema_migrations. An advisory lock serialises two
processes migrating at once (the API and the listener starting together).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from mescache.errors import MigrationError
from mescache.queries import SQL_DIR

MIGRATIONS_DIR = SQL_DIR / "migrations"
_LOCK_ID = 0x6D657363  # "mesc": any constant the other migrators share


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))


def apply_migrations(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    applied: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_ID])
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for path in migration_files(directory):
                if path.name in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL(path.read_text(encoding="utf-8")))
                        conn.execute(
                            "INSERT INTO schema_migrations (name) VALUES (%s)", [path.name]
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{path.name}: {exc}") from exc
                applied.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])
    return applied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply the schema migrations.")
    parser.add_argument("database_url", help="PostgreSQL connection string")
    args = parser.parse_args(argv)
    try:
        names = apply_migrations(args.database_url)
    except (MigrationError, psycopg.OperationalError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: applied {', '.join(names) if names else 'nothing (up to date)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
