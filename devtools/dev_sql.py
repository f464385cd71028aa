"""The development tools' own SQL (devtools/sql: private databases, the demo data), loaded
by name like the product's, so none of it sits in the product's files or in code."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

from mescache.queries import QueryBook

DEV_SQL_ROOT: Traversable = files("devtools") / "sql"
dev_query = QueryBook(DEV_SQL_ROOT)
