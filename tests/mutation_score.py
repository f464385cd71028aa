"""The mutation score per module and overall, from ``mutmut results --all true`` on stdin.

A mutant counts as killed when a test failed on it or it ran past its time limit (the
tests noticed it either way); survivors, and mutants no unit test reaches, count against
the score. With ``--min PERCENT`` the exit status is 1 when the overall score is lower.
Run by ``make mutation``; docs/MUTATION.md says what the survivors are.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable

KILLED = frozenset({"killed", "timeout"})
NOT_CHECKED = "not checked"


def module_of(mutant: str) -> str:
    """The dotted module of a mutant name such as ``mescache.rules.x_bound__mutmut_3``:
    mutmut names each function's mutants ``x_<function>`` or ``xǁ<class>ǁ<method>``."""
    parts = mutant.split(".")
    for i, part in enumerate(parts):
        if part.startswith(("x_", "xǁ")):
            return ".".join(parts[:i])
    raise ValueError(f"not a mutmut mutant name: {mutant!r}")


def tally(lines: Iterable[str]) -> dict[str, Counter[str]]:
    """Per module, how many of its mutants had each status."""
    by_module: dict[str, Counter[str]] = {}
    for line in lines:
        name, sep, status = line.strip().rpartition(": ")
        if not sep:
            continue  # mutmut's blank or heading lines
        by_module.setdefault(module_of(name), Counter())[status] += 1
    return by_module


def score(counts: Counter[str]) -> tuple[int, int]:
    """Killed and total mutants."""
    return sum(counts[s] for s in KILLED), sum(counts.values())


def report(by_module: dict[str, Counter[str]]) -> tuple[list[str], float]:
    """The report's lines and the overall score in percent. A module none of whose mutants
    was checked was not part of the run (``MUTATE=`` named others): it is left out."""
    lines = [f"{'module':<28} {'killed':>7} {'total':>6} {'score':>7}  other"]
    overall: Counter[str] = Counter()
    for module in sorted(by_module):
        counts = by_module[module]
        if set(counts) == {NOT_CHECKED}:
            continue
        overall.update(counts)
        lines.append(_row(module, counts))
    lines.append(_row("overall", overall))
    killed, total = score(overall)
    return lines, 100.0 * killed / total if total else 0.0


def _row(name: str, counts: Counter[str]) -> str:
    killed, total = score(counts)
    percent = 100.0 * killed / total if total else 0.0
    other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in KILLED)
    return f"{name:<28} {killed:>7} {total:>6} {percent:>6.1f}%  {other}".rstrip()


def main(argv: list[str] | None = None) -> int:
    """Print the report; 1 if the overall score is under ``--min``, 2 if there is none."""
    parser = argparse.ArgumentParser(description="The mutation score per module and overall.")
    parser.add_argument("--min", type=float, default=0.0, help="lowest overall score, percent")
    args = parser.parse_args(argv)
    by_module = tally(sys.stdin)
    if not by_module:
        print("mutation: no mutant results (run `mutmut run` first)", file=sys.stderr)
        return 2
    lines, overall = report(by_module)
    print("\n".join(lines))
    if overall < args.min:
        print(f"mutation: overall {overall:.1f}% is under {args.min:.1f}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
