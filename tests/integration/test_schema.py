"""Migrations apply once and are idempotent; the demo data looks like the workshop's."""

from __future__ import annotations

import psycopg
import pytest

from devtools.demo import KINDS, load_demo_data
from mescache import mesh
from mescache.migrate import apply_migrations, main, migration_files
from tests.conftest import Servers


def test_migrations_are_recorded_and_safe_to_run_again(database_url: str) -> None:
    assert apply_migrations(database_url) == []  # the template is already migrated
    with psycopg.connect(database_url, autocommit=True) as conn:
        for path in migration_files():  # every file is idempotent on its own, too
            conn.execute(path.read_text())
        identity = conn.execute(
            "SELECT relreplident FROM pg_class WHERE relname = 'orders'"
        ).fetchone()
        published = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = 'orders_cache'"
            )
        }
    assert identity == ("f",)
    assert published == {"orders", "models", "materials", "pricing_rules", "cache_probe"}


def test_every_demo_model_has_a_mesh_that_agrees_with_its_volume(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT kind, volume_cm3, mesh FROM models").fetchall()
    assert {kind for kind, _, _ in rows} == set(KINDS)
    for _, volume, stored in rows:
        shape = mesh.decode(stored)
        assert 1000 <= len(shape.triangles) <= 6000
        assert mesh.measure(shape).volume_mm3 / 1000 == pytest.approx(float(volume), abs=0.001)


def test_updated_at_is_kept_by_the_database(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT updated_at FROM orders WHERE id = 1").fetchone()
        conn.commit()
        conn.execute("UPDATE orders SET quantity = quantity + 1 WHERE id = 1")
        after = conn.execute("SELECT updated_at FROM orders WHERE id = 1").fetchone()
    assert before is not None
    assert after is not None
    assert after[0] > before[0]


@pytest.mark.parametrize("status", ["shipped", ""])
def test_the_database_refuses_unknown_statuses(database_url: str, status: str) -> None:
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE orders SET status = %s WHERE id = 1", [status])


def test_demo_data_has_about_one_percent_active_orders(servers: Servers) -> None:
    url = servers.pg.create_database("demo_full")
    apply_migrations(url)
    load_demo_data(url)
    with psycopg.connect(url) as conn:
        total, active = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('new', 'in_progress')) FROM orders"
        ).fetchone()  # type: ignore[misc]
        models, materials = conn.execute(
            "SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM materials)"
        ).fetchone()  # type: ignore[misc]
    assert total == 100_000
    assert 700 <= active <= 1300
    assert 200 <= models <= 999
    assert materials == 12


def test_migrate_cli_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"]) == 1
    assert capsys.readouterr().err.startswith("migrate: ")
