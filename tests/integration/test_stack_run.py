"""`make run` (devtools.devstack run) as a newcomer meets it: it prints the DATABASE_URL and
REDIS_URL of its private servers, and a Ctrl-C in the terminal stops everything cleanly,
Redis after the API (no warning about a lost connection)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import psycopg
import redis

from devtools.devstack import free_port
from tests.conftest import Servers

KEY = "mes_stack-run-test-operator-key-0123456789"


def _wait_for(
    what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], within: float = 120.0
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the stack exited with {proc.returncode} before: {what}")
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


def test_run_prints_the_server_urls_and_a_ctrl_c_stops_it_without_a_warning(
    servers: Servers,
) -> None:
    # Under the session's folder, which the postgres user may enter (pytest's tmp may not).
    tmp_path = servers.workdir / "make-run"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "METRICS_PORT", "WRITE_BEHIND"}
    }
    env.update({"PORT": str(port), "OPERATOR_API_KEY": KEY, "LOG_LEVEL": "INFO"})
    tmp_path.mkdir()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        # A process group of its own stands for the terminal: Ctrl-C signals the whole group.
        stack = subprocess.Popen(
            [sys.executable, "-m", "devtools.devstack", "run", "--no-demo",
             "--stack-dir", str(tmp_path / "stack")],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_for("the API", lambda: httpx.get(base + "/healthz", timeout=1).is_success, stack)
            text = log.read_text()
            database_url = re.search(r"export DATABASE_URL='([^']+)'", text)
            redis_url = re.search(r"export REDIS_URL='([^']+)'", text)
            assert database_url is not None, text
            assert redis_url is not None, text
            # They are the servers the stack runs on: psql and redis-cli would work.
            with psycopg.connect(database_url[1]) as conn:
                assert conn.execute("SELECT count(*) FROM orders").fetchone() is not None
            with redis.Redis.from_url(redis_url[1]) as r:
                assert r.ping()
            # A page following the change feed: Redis going first would break its stream.
            headers = {"Authorization": f"Bearer {KEY}"}
            with httpx.stream("GET", base + "/events", headers=headers, timeout=30) as events:
                assert next(events.iter_lines()) == "event: ready"
                _wait_for(
                    "the change feed",
                    lambda: bool(
                        httpx.get(base + "/stats", headers=headers, timeout=2).json()["live"]
                    ),
                    stack,
                    within=30,
                )
                os.killpg(stack.pid, signal.SIGINT)  # what a Ctrl-C in the terminal sends
                assert stack.wait(60) == 0
        finally:
            if stack.poll() is None:
                os.killpg(stack.pid, signal.SIGKILL)
                stack.wait()
    lines = log.read_text().splitlines()
    complaints = [
        line
        for line in lines
        if ("level=warning" in line or "level=error" in line or "Traceback" in line)
        and "slot created, cache namespace flushed" not in line  # a fresh stack's first start
    ]
    assert complaints == []
    assert any('event="listener stopped"' in line for line in lines)
    assert any('event="Finished server process' in line for line in lines)
