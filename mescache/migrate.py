"""Applies the ordered schema migrations packaged in `mescache/sql/migrations`, each once.

It belongs to the product, not to the development tools: a deployment installs its schema
with it (`python -m mescache.migrate DATABASE_URL`, the compose file's `migrate` step), and
the API's and the listener's start-up messages point there when tables are missing.

Migrations are plain SQL files named NNN_name.sql, applied in name order inside one
transaction each and recorded in schema_migrations. An advisory lock serialises two
processes migrating at once (the API and the listener starting together).
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

from mescache.errors import MigrationError
from mescache.queries import SQL_ROOT, query

MIGRATIONS_DIR: Traversable = SQL_ROOT / "migrations"
_LOCK_ID = 0x6D657363  # "mesc": any constant the other migrators share
_NAME_DIGITS = 3


def migration_files(directory: Traversable = MIGRATIONS_DIR) -> list[Traversable]:
    """The migration scripts (NNN_name.sql) in the order they apply."""
    return sorted(
        (
            entry
            for entry in directory.iterdir()
            if entry.is_file()
            and entry.name.endswith(".sql")
            and entry.name[:_NAME_DIGITS].isdigit()
            and entry.name[_NAME_DIGITS : _NAME_DIGITS + 1] == "_"
        ),
        key=lambda entry: entry.name,
    )


def apply_migrations(conninfo: str, directory: Traversable = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    applied: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(query("migrate_lock"), {"lock": _LOCK_ID})
        try:
            conn.execute(query("migrate_ledger"))
            done = {r[0] for r in conn.execute(query("migrate_applied"))}
            for path in migration_files(directory):
                if path.name in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL(path.read_text(encoding="utf-8")))
                        conn.execute(query("migrate_record"), {"name": path.name})
                except psycopg.Error as exc:
                    raise MigrationError(f"{path.name}: {exc}") from exc
                applied.append(path.name)
        finally:
            conn.execute(query("migrate_unlock"), {"lock": _LOCK_ID})
    return applied


def main(argv: list[str] | None = None) -> int:
    """`python -m mescache.migrate DATABASE_URL`: apply what is missing, say what."""
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
