"""The report: sections of tables and targets, rendered as BENCHMARKS.md.

Every figure is a ratio of runs made side by side in the same run, because this kind of
machine is shared and its absolute rates drift from one run to the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Target:
    """A target of the product and whether this run met it (None: not measured)."""

    what: str
    measured: str
    met: bool | None
    why: str = ""  # said when the target is not met


@dataclass
class Section:
    title: str
    module: str
    method: str
    tables: list[list[list[str]]] = field(default_factory=list)  # header row first
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _table(rows: list[list[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[met]


def render(intro: str, machine: dict[str, str], sections: list[Section], run_note: str) -> str:
    out = [intro.strip(), "", "## Machine", ""]
    out += [f"- {name}: {value}" for name, value in machine.items()]
    out += ["", run_note.strip(), "", "## Targets", ""]
    summary = [["figure", "target", "measured", "verdict"]]
    for section in sections:
        summary += [[section.title, t.what, t.measured, _verdict(t.met)] for t in section.targets]
    out += [_table(summary), ""]
    for section in sections:
        out += [f"## {section.title} (`{section.module}`)", "", section.method.strip(), ""]
        for rows in section.tables:
            out += [_table(rows), ""]
        missed = [t for t in section.targets if t.met is False]
        for why in dict.fromkeys(t.why for t in missed if t.why):
            whats = "; ".join(t.what for t in missed if t.why == why)
            out += [f"Not met: {whats}. {why}", ""]
        out += [note.strip() + "\n" for note in section.notes]
    return "\n".join(out).rstrip() + "\n"


def ms(value: float) -> str:
    return f"{value:.2f}"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def rate(value: float) -> str:
    return f"{value:,.0f}"
