"""What the shipped alert rules and dashboard ask of the processes: their expressions and
the series those name (only ours: ``orders_api_*`` and ``cdc_listener_*``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML (via uvicorn[standard]) ships no types

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mes-orders-cache.json"

_SERIES = re.compile(r"\b(?:orders_api|cdc_listener)_[a-zA-Z0-9_]+")
# Sample suffixes of counters and histograms: the family is what a process exports.
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def rule_expressions() -> dict[str, str]:
    """Alert name → expression."""
    groups = load_yaml(RULES)["groups"]
    return {rule["alert"]: str(rule["expr"]) for group in groups for rule in group["rules"]}


def panel_expressions() -> dict[str, list[str]]:
    """Panel title → its queries (rows hold none)."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
    }


def series_in(expression: str) -> set[str]:
    """The sample names of ours an expression selects (e.g. ``..._bucket``)."""
    return set(_SERIES.findall(expression))


def family(sample: str) -> str:
    """``cdc_listener_reconnects_total`` → ``cdc_listener_reconnects``."""
    for suffix in _SUFFIXES:
        if sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample
