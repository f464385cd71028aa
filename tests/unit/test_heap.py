"""mescache.heap, in a fresh interpreter (it changes process-wide collector state)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
import api.app  # what an API worker has imported when it settles
from mescache import heap
heap.settle()
garbage = [[] for _ in range(5_000)]  # young objects below the new threshold
for item in garbage:
    item.append(item)  # cycles: only the collector frees them
del garbage
print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                  "young": gc.get_count()[0]}))
"""


def test_settle_freezes_the_started_heap_and_collects_the_young_less_often() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    state = json.loads(out)
    assert state["frozen"] > 50_000  # the imported framework is out of full collections
    assert state["threshold"][0] == 10_000
    assert state["young"] >= 5_000  # no young collection ran yet: 700 would have
