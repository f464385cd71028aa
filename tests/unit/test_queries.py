"""Every SQL statement is packaged and found by name; none is left in the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mescache.errors import QueryNotFound
from mescache.migrate import migration_files
from mescache.queries import SQL_ROOT, QueryBook, query, script

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "cdc_listener", "devtools", "mescache", "writer")
# A string that opens with a statement's keyword is SQL, wherever it is written.
STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|SHOW|LISTEN|NOTIFY|COPY|"
    r"ANALYZE|TRUNCATE|GRANT|SET)\s",
)


def test_every_named_block_of_the_package_loads_and_names_are_unique() -> None:
    names = query.blocks
    assert {"dashboard", "slot_status", "outbox_take", "writer_lock", "migrate_lock"} <= set(names)
    assert all(body and not body.startswith("-- name:") for body in names.values())


def test_a_missing_name_says_which_and_where() -> None:
    with pytest.raises(QueryNotFound, match="no query named 'nope'"):
        query("nope")
    with pytest.raises(QueryNotFound, match=r"no SQL script 'notify/nope\.sql'"):
        script("notify/nope.sql")


def test_a_name_given_in_two_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: same\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: same\nSELECT 2;\n")
    (tmp_path / "notes.txt").write_text("-- name: other\nSELECT 3;\n")
    with pytest.raises(QueryNotFound, match=r"'same' named in a\.sql and b\.sql"):
        QueryBook(tmp_path)("same")
    (tmp_path / "b.sql").write_text("-- name: other\nSELECT 2;\n")
    book = QueryBook(tmp_path)
    assert book("same").as_string() == "SELECT 1;"
    assert set(book.blocks) == {"same", "other"}  # only .sql files count


def test_the_migrations_are_packaged_in_order() -> None:
    names = [entry.name for entry in migration_files()]
    assert names == sorted(names)
    assert names[0] == "001_schema.sql"
    assert len(names) == len({name[:3] for name in names})  # no number given twice
    assert "CREATE TABLE" in script("migrations/001_schema.sql")
    assert "pg_notify" in script("notify/outbox.sql")
    assert (SQL_ROOT / "queries.sql").is_file()


def _sql_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and STATEMENT.match(node.value)
    ]


def test_no_sql_statement_is_written_in_the_packages_code() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:60]}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, text in _sql_literals(path)
    ]
    assert found == []


def test_the_guard_sees_sql_in_code(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('run("SELECT 1")\nrun(f"LISTEN {channel}")\nrun("a SELECT in prose")\n')
    assert [line for line, _ in _sql_literals(sample)] == [1, 2]
