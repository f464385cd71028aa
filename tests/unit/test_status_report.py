"""`cdc-listener status` in a terminal: one line per standby saying whether its copy of the
slot would survive a promotion, and why not."""

from __future__ import annotations

from dataclasses import asdict

from cdc_listener.cli import _human
from cdc_listener.slot import StandbyCopy


def test_each_standby_gets_a_verdict_line() -> None:
    copies = [
        StandbyCopy("standby1", "primary", "streaming", "standby1", True, None, None, None, None),
        StandbyCopy(
            "db2:5432", "standby", "streaming", "standby1", None, True, True, "0/3A1", None
        ),
        StandbyCopy("db3:5432", "standby", None, None, None, None, None, None, "unreachable"),
    ]
    report = {"mode": "logical", "slot": "orders_cache", "exists": False}
    report["standbys"] = [asdict(copy) for copy in copies]
    lines = _human(report).splitlines()
    assert lines == [
        "slot orders_cache: not created yet (cdc-listener run creates it)",
        "standby standby1 (seen from the primary): copy not visible here; state streaming",
        "standby db2:5432 (on the standby): usable; state streaming; copy synchronised at 0/3A1",
        "standby db3:5432 (on the standby): copy not visible here; unreachable",
    ]
