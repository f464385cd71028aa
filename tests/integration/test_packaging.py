"""A non-editable install serves the stack: the wheel carries its SQL.

The project is built as a wheel from a copy of its files and installed, without its
dependencies, into a fresh virtual environment that borrows them from the test's own
environment (offline and quick). Then, from a folder that holds no source, the installed
`python -m mescache.migrate` builds an empty database's schema, the installed
`orders-api` and `cdc-listener` start against the session's private servers, and a read
and a DBA's change prove the whole path: the change reaches the cached order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from devtools.devstack import free_port
from mescache.keys import KeySchema
from tests.conftest import Servers

ROOT = Path(__file__).resolve().parents[2]
KEY = "mes_packaging-test-operator-key-0123456789"
# Not part of what is installed: leave them out of the copy the wheel is built from.
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", ".stack", "mutants", "__pycache__", "*.egg-info", "build", ".*_cache"
)


@dataclass
class Installed:
    """The fresh environment holding the wheel, and a folder with no source in it."""

    bin: Path
    elsewhere: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of an installed command, scrubbed of the test run's paths."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CDC_", "TTL_", "PYTHON")) and k not in {"VIRTUAL_ENV"}
        }
        env.update(extra)
        return env


def _wait_for(what: str, check: Callable[[], bool], procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args!r} exited with {proc.returncode}: {what}")
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_SKIP)
    target = base / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    # The dependencies come from this environment's site-packages, appended to the path
    # (a plain path line: the editable install's own .pth hooks there are not run).
    site = Path(sysconfig.get_path("purelib", vars={"base": str(target), "platbase": str(target)}))
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(target / "bin" / "python"),
         "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", str(source)],
        check=True, cwd=base,
    )  # fmt: skip
    shutil.rmtree(source)  # nothing of the source is left to find
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return Installed(target / "bin", elsewhere)


def test_the_installed_package_is_not_the_source_tree(installed: Installed) -> None:
    found = subprocess.run(
        [str(installed.bin / "python"), "-c",
         "import api, cdc_listener, mescache, writer; "
         "from devtools.dev_sql import dev_query; dev_query('demo_orders'); "
         "print(mescache.__file__); print(api.__file__)"],
        check=True, capture_output=True, text=True, cwd=installed.elsewhere,
        env=installed.env(),
    ).stdout.split()  # fmt: skip
    assert len(found) == 2
    for path in found:
        assert str(ROOT) not in path
        assert "site-packages" in path


def test_a_non_editable_install_migrates_serves_and_invalidates(
    installed: Installed, servers: Servers, redis_url: str
) -> None:
    database_url = servers.pg.create_database("packaged")  # empty: no template
    migrated = subprocess.run(
        [str(installed.bin / "python"), "-m", "mescache.migrate", database_url],
        check=True, capture_output=True, text=True, cwd=installed.elsewhere,
        env=installed.env(),
    )  # fmt: skip
    assert "001_schema.sql" in migrated.stdout
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO materials (code, name, density_g_cm3, price_per_gram)"
            " VALUES ('silver-925', 'Sterling silver 925', 10.4, 1.10)"
        )
        conn.execute(
            "INSERT INTO models (sku, name, kind, volume_cm3, base_price)"
            " VALUES ('ring-1', 'Wedding ring', 'ring', 1.5, 20)"
        )
        row = conn.execute(
            "INSERT INTO orders (customer, model_id, material_id, quantity, total_price)"
            " SELECT 'Anna K.', models.id, materials.id, 1, 36.50 FROM models, materials"
            " RETURNING id"
        ).fetchone()
    assert row is not None
    order_id = row[0]
    api_port, metrics_port = free_port(), free_port()
    common = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    procs = [
        subprocess.Popen(
            [str(installed.bin / "orders-api")],
            cwd=installed.elsewhere,
            env=installed.env(**common, HOST="127.0.0.1", PORT=str(api_port), OPERATOR_API_KEY=KEY),
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [str(installed.bin / "cdc-listener"), "run"],
            cwd=installed.elsewhere,
            env=installed.env(**common, CDC_SLOT="slot_packaged", METRICS_PORT=str(metrics_port)),
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        api = f"http://127.0.0.1:{api_port}"
        ready = f"http://127.0.0.1:{metrics_port}/readyz"
        _wait_for("the API", lambda: httpx.get(api + "/healthz", timeout=1).is_success, procs)
        _wait_for("the listener", lambda: httpx.get(ready, timeout=1).is_success, procs)
        headers = {"Authorization": f"Bearer {KEY}"}

        def status() -> str:
            reply = httpx.get(f"{api}/orders/{order_id}", headers=headers, timeout=5)
            assert reply.status_code == 200, reply.text
            return str(reply.json()["status"])

        assert status() == "new"
        with redis.Redis.from_url(redis_url) as cache:  # cached for TTL_ORDER (300 s)...
            assert cache.exists(KeySchema().order(order_id).name) == 1
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE orders SET status = 'in_progress' WHERE id = %s", [order_id])
        # ... so only the installed listener's invalidation can bring the change.
        _wait_for("the change to reach the cache", lambda: status() == "in_progress", procs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = 'slot_packaged' AND NOT active"
            )
