"""Mesh geometry: the stored form round-trips, malformed buffers are refused, and the
measures are those of the shape."""

from __future__ import annotations

import contextlib
import math
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mescache import mesh, shapes
from mescache.demo import KINDS
from mescache.errors import MeshError


def test_a_torus_measures_what_geometry_says() -> None:
    torus = shapes.ring(17.0, 2.0, nu=128, nv=64)
    measures = mesh.measure(torus)
    big, small = 9.5, 1.0
    assert measures.volume_mm3 == pytest.approx(2 * math.pi**2 * big * small**2, rel=0.005)
    assert measures.surface_mm2 == pytest.approx(4 * math.pi**2 * big * small, rel=0.005)


def test_widening_a_ring_grows_it_with_its_circumference() -> None:
    ring = shapes.ring(17.0, 2.0)
    before = mesh.measure(ring).volume_mm3
    after = mesh.measure(mesh.widen(ring, 1.0)).volume_mm3  # inner diameter 17 -> 19 mm
    assert after / before == pytest.approx(10.5 / 9.5, rel=0.01)
    assert mesh.widen(ring, 0.0) is ring


@pytest.mark.parametrize("kind", KINDS)
def test_every_demo_shape_is_closed_outward_and_survives_storage(kind: str) -> None:
    shape = shapes.demo_shape(kind, random.Random(7), 17.0)
    stored = mesh.encode(shape)
    again = mesh.decode(stored)
    assert len(again.triangles) == len(shape.triangles)
    original, kept = mesh.measure(shape), mesh.measure(again)
    assert original.volume_mm3 > 0
    assert kept.volume_mm3 == pytest.approx(original.volume_mm3, rel=0.01)
    # closed: every edge is shared by exactly two triangles, once in each direction
    edges = {(a, b) for t in shape.triangles for a, b in zip(t, (*t[1:], t[0]), strict=True)}
    assert all((b, a) in edges for a, b in edges if a != b)


def test_malformed_meshes_are_refused_with_a_reason() -> None:
    good = mesh.encode(shapes.ring(17.0, 2.0, nu=8, nv=6))
    for bad, reason in [
        (good[:10], "shorter than its header"),
        (b"NOPE" + good[4:], "not a mesh"),
        (good[:-1], "needs"),
        (good + b"\0", "needs"),
        (
            struct.pack("<4sIIf", b"MSH1", 1, 1, 0.01) + b"\0" * 6 + struct.pack("<3H", 0, 0, 9),
            "vertex 9",
        ),
        (struct.pack("<4sIIf", b"MSH1", 0, 0, -1.0), "unit"),
    ]:
        with pytest.raises(MeshError, match=reason):
            mesh.decode(bad)
    with pytest.raises(MeshError, match="out of range"):
        mesh.encode(mesh.Mesh([(400.0, 0.0, 0.0)], []))


HEADER = struct.pack("<4sIIf", b"MSH1", 3, 1, 0.01)


@given(st.one_of(st.binary(max_size=200), st.binary(max_size=60).map(HEADER.__add__)))
def test_decoding_never_fails_otherwise(data: bytes) -> None:
    with contextlib.suppress(MeshError):
        shape = mesh.decode(data)
        assert all(0 <= i < len(shape.vertices) for t in shape.triangles for i in t)
