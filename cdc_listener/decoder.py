"""Which pgoutput decoder the listener runs: the compiled build of :mod:`cdc_listener.pgoutput`
when it is there and current, otherwise that pure module itself.

The compiled build (``cdc_listener._pgoutput_native``, made by mypyc from the very same source
by ``make install``, see devtools/build_decoder.py) decodes the same bytes into the same
messages and raises the same errors (tests/unit/test_decoder.py holds it to the pure one on the
captured payloads and under the fuzzer); it only runs faster. It is used only if it carries the
digest of the ``pgoutput.py`` beside it, so an edit after the build falls back to the pure
decoder rather than run stale code. Which one runs, and why, is logged when streaming starts
(``decoder``, ``why``).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cdc_listener import pgoutput
from cdc_listener.pgoutput_messages import Message

NATIVE_MODULE = "cdc_listener._pgoutput_native"

Decode = Callable[[bytes | bytearray | memoryview], Message]
Pick = Callable[[bytes | bytearray | memoryview, pgoutput.UpdateLayouts], pgoutput.Picked | None]


@dataclass(frozen=True)
class Decoder:
    """The decode and pick_update functions and what they are: ``compiled`` or ``pure``,
    and why pure if so."""

    decode: Decode
    implementation: Literal["compiled", "pure"]
    reason: str = ""
    pick_update: Pick = pgoutput.pick_update


PURE = Decoder(pgoutput.decode, "pure", "asked for")


def load_decoder(prefer: Literal["compiled", "pure"] = "compiled") -> Decoder:
    """The compiled decoder if `prefer` says so and a current build is installed, else the
    pure one with the reason."""
    if prefer == "pure":
        return PURE
    try:
        native = importlib.import_module(NATIVE_MODULE)
    except ImportError:
        return Decoder(pgoutput.decode, "pure", "no compiled build installed (make install)")
    source = Path(pgoutput.__file__).read_bytes()
    if getattr(native, "SOURCE_SHA256", None) != hashlib.sha256(source).hexdigest():
        return Decoder(
            pgoutput.decode, "pure", "the compiled build is older than pgoutput.py (make install)"
        )
    decode: Decode = native.decode
    pick: Pick = native.pick_update
    return Decoder(decode, "compiled", pick_update=pick)
