"""The compiled pgoutput decoder against its reference, the pure module: the same message or
the same error for every captured payload, every prefix of one, and the fuzzer's inputs; and
the choice between them (cdc_listener.decoder), which falls back to the pure one when the
compiled build is missing or older than the source.

The comparisons need the compiled build (`make install` makes it, devtools/build_decoder.py);
without it they are skipped, saying why, and the listener runs the pure decoder.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_listener import decoder, pgoutput
from cdc_listener.decoder import Decode, load_decoder
from cdc_listener.errors import DecodeError
from tests.unit.test_pgoutput import IDS, KINDS, PAYLOADS, mutated_payload

FUZZ = settings(
    database=None, deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)

_LOADED = load_decoder()


def _compiled() -> Decode:
    if _LOADED.implementation != "compiled":
        pytest.skip(f"the compiled decoder is not in use: {_LOADED.reason}")
    return _LOADED.decode


def outcome(decode: Decode, payload: bytes | bytearray | memoryview) -> object:
    """The decoded message, or the DecodeError's type and text: what a caller sees."""
    try:
        return decode(payload)
    except DecodeError as exc:
        return ("DecodeError", str(exc))


def same(payload: bytes) -> None:
    """The compiled decoder gives what the pure one gives, whatever the input's type."""
    compiled = _compiled()
    expected = outcome(pgoutput.decode, payload)
    for wrap in (bytes, bytearray, memoryview):
        got = outcome(compiled, wrap(payload))
        assert got == expected, payload.hex()
        assert type(got) is type(expected)


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_captured_payloads_decode_the_same(payload: bytes) -> None:
    same(payload)
    assert isinstance(_compiled()(payload), tuple(KINDS.values()))


@pytest.mark.parametrize("payload", PAYLOADS, ids=IDS)
def test_prefixes_and_a_trailing_byte_fail_the_same(payload: bytes) -> None:
    for end in range(len(payload)):
        same(payload[:end])
    same(payload + b"\0")


def test_the_compiled_decoder_returns_the_reference_classes() -> None:
    message = _compiled()(next(p for p in PAYLOADS if p[:1] == b"U"))
    assert type(message) is pgoutput.Update  # not a compiled copy: `is` checks hold


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_the_same(payload: bytes) -> None:
    same(payload)


@FUZZ
@given(st.sampled_from(sorted(KINDS)), st.binary(max_size=300))
def test_fuzz_random_bodies_of_known_types_the_same(kind: str, body: bytes) -> None:
    same(kind.encode() + body)


@FUZZ
@given(st.data())
def test_fuzz_mutated_captured_payloads_the_same(data: st.DataObject) -> None:
    same(mutated_payload(data))


# The choice.


@pytest.fixture
def fake_native() -> Iterator[types.ModuleType]:
    """A stand-in for the compiled module, put where the import finds it, then removed."""
    saved = sys.modules.get(decoder.NATIVE_MODULE)
    module = types.ModuleType(decoder.NATIVE_MODULE)
    sys.modules[decoder.NATIVE_MODULE] = module
    yield module
    if saved is None:
        del sys.modules[decoder.NATIVE_MODULE]
    else:
        sys.modules[decoder.NATIVE_MODULE] = saved


def test_pure_is_used_when_asked() -> None:
    chosen = load_decoder("pure")
    assert chosen.decode is pgoutput.decode
    assert chosen.implementation == "pure"


def test_a_compiled_build_of_another_source_is_not_used(fake_native: types.ModuleType) -> None:
    def wrong(_: object) -> pgoutput.Message:
        raise AssertionError("a stale build must never run")

    fake_native.decode = wrong  # type: ignore[attr-defined]
    fake_native.SOURCE_SHA256 = "0" * 64  # type: ignore[attr-defined]
    chosen = load_decoder()
    assert chosen.decode is pgoutput.decode
    assert chosen.implementation == "pure"
    assert "older than pgoutput.py" in chosen.reason


def test_no_compiled_build_means_the_pure_decoder(fake_native: types.ModuleType) -> None:
    sys.modules[decoder.NATIVE_MODULE] = None  # type: ignore[assignment]  # import fails
    chosen = load_decoder()
    assert chosen.decode is pgoutput.decode
    assert chosen.implementation == "pure"
    assert "no compiled build" in chosen.reason


def test_a_current_compiled_build_is_used(fake_native: types.ModuleType) -> None:
    def native(payload: bytes | bytearray | memoryview) -> pgoutput.Message:
        return pgoutput.decode(payload)

    def pick(
        payload: bytes | bytearray | memoryview, layouts: pgoutput.UpdateLayouts
    ) -> pgoutput.Picked | None:
        return pgoutput.pick_update(payload, layouts)

    fake_native.decode = native  # type: ignore[attr-defined]
    fake_native.pick_update = pick  # type: ignore[attr-defined]
    digest = hashlib.sha256(Path(pgoutput.__file__).read_bytes()).hexdigest()
    fake_native.SOURCE_SHA256 = digest  # type: ignore[attr-defined]
    chosen = load_decoder()
    assert chosen.decode is native
    assert chosen.pick_update is pick
    assert chosen.implementation == "compiled"
    assert chosen.reason == ""
