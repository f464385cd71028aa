"""Load from a separate process: wrk (Debian's package), its output parsed."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from bench.stack import AUTH_HEADER


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers, socket errors and timeouts


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _ms(text: str, pct: str) -> float:
    match = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {pct}% latency in wrk's output:\n{text}")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]


def wrk(port: int, path: str, seconds: float, connections: int) -> WrkResult:
    """One closed-loop run: `connections` clients, one wrk thread (two cores are shared
    with the server under test)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-H",
            AUTH_HEADER,
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx[1])
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(sock[i]) for i in range(1, 5))
    return WrkResult(float(rps[1]), _ms(out, "50"), _ms(out, "99"), int(total[1]), errors)
