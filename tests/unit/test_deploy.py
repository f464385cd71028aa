"""The shipped alert rules, Prometheus configuration and Grafana dashboard (deploy/): valid
for promtool, every alert unit-tested both ways, and wired into docker-compose.yml as the
files say (read-checked: no container runs here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML (via uvicorn[standard]) ships no types

from tests.deploy_files import (
    DEPLOY,
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    RULES,
    load_yaml,
    panel_expressions,
    rule_expressions,
    series_in,
)

COMPOSE = DEPLOY.parent / "docker-compose.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip(
            "promtool not installed (Debian's prometheus package; make test installs it"
            " with apt-get when run as root)"
        )
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, cwd=RULES.parent
    )


def test_promtool_accepts_the_rules_and_the_configuration() -> None:
    rules = promtool("check", "rules", RULES.name)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in rules.stdout
    config = promtool("check", "config", PROMETHEUS_CONFIG.name)
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_would_fail_a_broken_expectation(tmp_path: Path) -> None:
    """The unit tests are read and can fail: a case expecting the opposite fails."""
    cases = load_yaml(RULE_TESTS)
    for case in cases["tests"]:
        for check in case["alert_rule_test"]:
            check["exp_alerts"] = [] if check["exp_alerts"] else [{"exp_labels": {}}]
    cases["rule_files"] = [str(RULES)]
    broken = tmp_path / "inverted_test.yml"
    broken.write_text(yaml.safe_dump(cases), encoding="utf-8")
    result = promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert result.stdout.count("alertname:") + result.stderr.count("alertname:") >= len(
        rule_expressions()
    )


def test_every_alert_has_a_case_that_fires_and_one_that_must_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = set(rule_expressions())
    assert alerts == {
        "SlotRetainingWal",
        "ListenerNotReady",
        "ListenerApplyLagHigh",
        "ListenerReconnectStorm",
        "StaleKeysFound",
        "ConsistencyBelowSlo",
        "WriteBehindDeadLetters",
        "RedisCircuitOpen",
    }
    assert fires == alerts
    assert quiet == alerts


def test_every_rule_and_panel_names_a_series_of_ours() -> None:
    """So a misspelt prefix cannot hide a query from the live series check."""
    for name, expr in rule_expressions().items():
        assert series_in(expr), name
    for title, exprs in panel_expressions().items():
        assert exprs, title
        assert all(series_in(expr) for expr in exprs), title


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path (relative to the compose file) of bind mounts."""
    found: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (COMPOSE.parent / source).resolve()
    return found


def test_compose_provisions_prometheus_and_grafana_with_these_files() -> None:
    compose = load_yaml(COMPOSE)
    prometheus = _service(compose, "prometheus")
    mounts = _mounts(prometheus)
    assert mounts["/etc/prometheus"] == PROMETHEUS_CONFIG.parent
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]

    # Each scrape job finds a compose service on the port that service listens on.
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [RULES.name]
    ports = {
        "api": _service(compose, "api")["environment"]["PORT"],
        "listener": _service(compose, "listener")["environment"]["METRICS_PORT"],
    }
    scraped = {}
    for job in config["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            for name in sd["names"]:
                scraped[name] = str(sd["port"])
    assert scraped == ports

    grafana = _service(compose, "grafana")
    mounts = _mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    source = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    url = urlparse(source["url"])
    assert url.hostname == "prometheus"
    assert f"127.0.0.1:{url.port}:{url.port}" in prometheus["ports"]
    provider = load_yaml(provisioning / "dashboards" / "mescache.yml")["providers"][0]
    dashboards = mounts[provider["options"]["path"]]
    assert sorted(p.name for p in dashboards.iterdir()) == ["mes-orders-cache.json"]
    assert set(compose["volumes"]) >= {"promdata", "grafanadata"}
