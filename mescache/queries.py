"""Named SQL blocks loaded from sql/queries.sql, so the Python stays free of long SQL."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from psycopg import sql

from mescache.errors import QueryNotFound

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_BLOCK = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_blocks(text: str) -> dict[str, str]:
    """Split a file of "-- name: x" blocks into {name: statement}."""
    parts = _BLOCK.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def _all() -> dict[str, str]:
    return parse_blocks((SQL_DIR / "queries.sql").read_text(encoding="utf-8"))


def query(name: str) -> sql.SQL:
    """The named statement, ready for psycopg's execute()."""
    try:
        return sql.SQL(_all()[name])  # a trusted file, not user input
    except KeyError:
        raise QueryNotFound(f"no query named {name!r} in {SQL_DIR / 'queries.sql'}") from None
