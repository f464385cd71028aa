"""The mutation report reads mutmut's result lines and scores each module."""

from __future__ import annotations

import io

import pytest

from tests import mutation_score

RESULTS = """\
    mescache.rules.x_add_change__mutmut_1: killed
    mescache.rules.xǁTouchedǁ__bool____mutmut_1: killed
    mescache.rules.xǁTouchedǁbound__mutmut_2: survived
    mescache.rules.x_touched_by__mutmut_1: timeout
    cdc_listener.pgoutput.x_decode__mutmut_2: survived
    cdc_listener.pgoutput.x_decode__mutmut_3: no tests
"""


def test_modules_are_read_off_mutant_names() -> None:
    assert mutation_score.module_of("mescache.rules.x_add_change__mutmut_1") == "mescache.rules"
    assert mutation_score.module_of("a.b.xǁTouchedǁbound__mutmut_2") == "a.b"
    with pytest.raises(ValueError, match="not a mutmut mutant name"):
        mutation_score.module_of("mescache.rules")


def test_killed_and_timed_out_mutants_count_as_killed() -> None:
    lines, overall = mutation_score.report(mutation_score.tally(RESULTS.splitlines()))
    assert overall == pytest.approx(50.0)
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert rows["mescache.rules"] == ["3", "4", "75.0%"]
    assert rows["cdc_listener.pgoutput"] == ["0", "2", "0.0%"]
    assert rows["overall"] == ["3", "6", "50.0%"]
    assert "1 no tests, 1 survived" in lines[1]


def test_the_exit_status_says_whether_the_score_is_high_enough(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(RESULTS))
    assert mutation_score.main(["--min", "50"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(RESULTS))
    assert mutation_score.main(["--min", "95"]) == 1
    assert "overall 50.0% is under 95.0%" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert mutation_score.main([]) == 2


def test_a_module_left_out_of_the_run_is_left_out_of_the_score() -> None:
    one_module = RESULTS + (
        "    mescache.keys.x_check_prefix__mutmut_1: not checked\n"
        "    mescache.keys.x_check_prefix__mutmut_2: not checked\n"
        "    mescache.pricing.x_quote__mutmut_1: not checked\n"
        "    mescache.pricing.x_quote__mutmut_2: killed\n"
    )
    lines, overall = mutation_score.report(mutation_score.tally(one_module.splitlines()))
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert "mescache.keys" not in rows
    # a module that ran counts its unchecked mutants against the score
    assert rows["mescache.pricing"] == ["1", "2", "50.0%"]
    assert overall == pytest.approx(100.0 * 4 / 8)
