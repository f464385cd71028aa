"""Every SQL statement of the product, loaded by name from the package's `.sql` files.

The files are package data (`importlib.resources`), so an installed wheel finds them as
an editable checkout does, and the Python stays free of SQL:

- `mescache/sql/*.sql`: named blocks, each from "-- name: <name>" to the next one, all
  read into one namespace (a name given twice is an error, not a silent override);
- `mescache/sql/migrations/NNN_*.sql`: the ordered schema migrations (`mescache.migrate`);
- `mescache/sql/notify/outbox.sql`: the trigger outbox of the LISTEN/NOTIFY source.

The development tools keep their own statements the same way (`devtools.dev_sql`, a
`QueryBook` over `devtools/sql`), so nothing of the demo data lives in the product's files.
"""

from __future__ import annotations

import re
from functools import cached_property
from importlib.resources import files
from importlib.resources.abc import Traversable

from psycopg import sql

from mescache.errors import QueryNotFound

SQL_ROOT: Traversable = files("mescache") / "sql"
_BLOCK = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_blocks(text: str) -> dict[str, str]:
    """Split a file of "-- name: x" blocks into {name: statement}."""
    parts = _BLOCK.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


class QueryBook:
    """The named blocks of every `.sql` file directly in one packaged folder."""

    def __init__(self, root: Traversable) -> None:
        self.root = root

    @cached_property
    def blocks(self) -> dict[str, str]:
        """{name: statement} over the folder's files; a name in two files is refused."""
        found: dict[str, str] = {}
        where: dict[str, str] = {}
        for entry in sorted(self.root.iterdir(), key=lambda e: e.name):
            if not entry.is_file() or not entry.name.endswith(".sql"):
                continue
            for name, body in parse_blocks(entry.read_text(encoding="utf-8")).items():
                if name in found:
                    raise QueryNotFound(f"query {name!r} named in {where[name]} and {entry.name}")
                found[name], where[name] = body, entry.name
        return found

    def __call__(self, name: str) -> sql.SQL:
        """The named statement, ready for psycopg's execute()."""
        try:
            return sql.SQL(self.blocks[name])  # a trusted packaged file, not user input
        except KeyError:
            raise QueryNotFound(f"no query named {name!r} in {self.root}") from None


query = QueryBook(SQL_ROOT)


def script(path: str) -> str:
    """A whole packaged SQL script by its path under `mescache/sql`, e.g.
    "notify/outbox.sql"."""
    entry = SQL_ROOT.joinpath(*path.split("/"))
    if not entry.is_file():
        raise QueryNotFound(f"no SQL script {path!r} in {SQL_ROOT}")
    return entry.read_text(encoding="utf-8")
