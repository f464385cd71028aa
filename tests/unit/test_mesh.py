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

from devtools import shapes
from devtools.demo import KINDS
from mescache import mesh
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


def box(dx: float, dy: float, dz: float) -> mesh.Mesh:
    """A closed box with outward triangles, one corner at the origin."""
    vertices = [(x, y, z) for x in (0.0, dx) for y in (0.0, dy) for z in (0.0, dz)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    triangles = [t for a, b, c, d in faces for t in ((a, b, c), (a, c, d))]
    return mesh.Mesh(vertices, triangles)


def test_a_box_measures_its_volume_and_surface_exactly() -> None:
    measures = mesh.measure(box(2.0, 3.0, 4.0))
    assert measures.volume_mm3 == pytest.approx(24.0, abs=1e-9)
    assert measures.surface_mm2 == pytest.approx(2 * (6 + 8 + 12), abs=1e-9)
    # a box far from the origin measures the same: the volume is a sum of signed parts
    far = mesh.Mesh(
        [(x + 50, y - 70, z + 9) for x, y, z in box(2, 3, 4).vertices], box(2, 3, 4).triangles
    )
    assert mesh.measure(far).volume_mm3 == pytest.approx(24.0, abs=1e-6)


def test_widening_moves_each_vertex_off_the_axis_by_the_delta() -> None:
    shape = mesh.Mesh([(3.0, 4.0, 5.0), (0.0, 0.0, 7.0), (-6.0, 0.0, -1.0)], [(0, 1, 2)])
    wider = mesh.widen(shape, 1.0)
    assert wider.triangles == shape.triangles
    assert wider.vertices == [
        pytest.approx((3.6, 4.8, 5.0)),
        (0.0, 0.0, 7.0),  # on the axis: nowhere to move
        pytest.approx((-7.0, 0.0, -1.0)),
    ]
    narrower = mesh.widen(shape, -0.5)
    assert narrower.vertices[0] == pytest.approx((2.7, 3.6, 5.0))


# The demo ring as stored (0.01 mm steps), measured once: a change in the geometry code
# moves these.
RING_VOLUME, RING_SURFACE = 185.846074, 374.395679


def test_a_resized_ring_measures_pinned_values() -> None:
    # The demo ring (inner diameter 17 mm, band 2 mm), as stored, resized to 19 and to 15 mm.
    ring = mesh.decode(mesh.encode(shapes.ring(17.0, 2.0)))
    measured = {delta: mesh.measure(mesh.widen(ring, delta)) for delta in (0.0, 1.0, -1.0)}
    assert measured[0.0].volume_mm3 == pytest.approx(RING_VOLUME, rel=1e-6)
    assert measured[0.0].surface_mm2 == pytest.approx(RING_SURFACE, rel=1e-6)
    for delta, m in measured.items():
        grown = (9.5 + delta) / 9.5  # both grow with the band's circumference
        assert m.volume_mm3 == pytest.approx(RING_VOLUME * grown, rel=0.002), delta
        assert m.surface_mm2 == pytest.approx(RING_SURFACE * grown, rel=0.002), delta


def test_a_mesh_round_trips_at_its_unit() -> None:
    shape = mesh.Mesh([(1.25, -2.5, 0.0), (327.67, -327.67, 0.01)], [(0, 1, 1)])
    stored = mesh.encode(shape)
    assert stored[:4] == mesh.MAGIC
    assert len(stored) == struct.calcsize("<4sIIf") + 6 * 2 + 6 * 1
    again = mesh.decode(stored)
    assert again.triangles == [(0, 1, 1)]
    # the unit is stored as a 32-bit float: exact to far less than a step
    assert len(again.vertices) == len(shape.vertices)
    for got, sent in zip(again.vertices, shape.vertices, strict=True):
        assert got == pytest.approx(sent, abs=1e-4)
    coarse = mesh.decode(mesh.encode(shape, unit_mm=0.5))
    assert coarse.vertices[0] == pytest.approx((1.0, -2.5, 0.0))  # 1.25 / 0.5 rounds to even
    with pytest.raises(MeshError, match="out of range"):
        mesh.encode(mesh.Mesh([(0.0, 0.0, -327.68)], []))
    with pytest.raises(MeshError, match="does not exist"):
        mesh.encode(mesh.Mesh([(0.0, 0.0, 0.0)], [(0, 0, 1)]))
    assert mesh.decode(mesh.encode(mesh.Mesh([], []))) == mesh.Mesh([], [])


def test_the_stored_form_holds_what_16_bit_indices_can_name_and_no_more() -> None:
    flat = [(0.0, 0.0, 0.0)] * 65536
    assert len(mesh.decode(mesh.encode(mesh.Mesh(flat, [(65535, 0, 0)]))).vertices) == 65536
    with pytest.raises(MeshError, match=r"^65537 vertices: at most 65536 fit 16-bit indices$"):
        mesh.encode(mesh.Mesh([*flat, (0.0, 0.0, 0.0)], []))
    point = mesh.Mesh([(0.0, 0.0, 0.0)], [(0, 0, 0)])  # degenerate, but every index exists
    assert mesh.decode(mesh.encode(point)) == point
    with pytest.raises(MeshError, match=r"^a triangle names a vertex that does not exist$"):
        mesh.encode(mesh.Mesh([(0.0, 0.0, 0.0)], [(0, 1, 0)]))


def test_a_stored_mesh_must_have_a_positive_unit_and_only_its_own_vertices() -> None:
    with pytest.raises(MeshError, match=r"^mesh unit 0.0 is not a positive length$"):
        mesh.decode(struct.pack("<4sIIf", b"MSH1", 0, 0, 0.0))
    one_vertex = struct.pack("<4sIIf", b"MSH1", 1, 1, 0.01) + b"\0" * 6
    assert mesh.decode(one_vertex + struct.pack("<3H", 0, 0, 0)).triangles == [(0, 0, 0)]
    with pytest.raises(MeshError, match=r"^a triangle names vertex 1 of 1$"):
        mesh.decode(one_vertex + struct.pack("<3H", 0, 1, 0))


def test_widening_moves_vertices_near_the_axis_too() -> None:
    shape = mesh.Mesh([(0.3, 0.4, 2.0)], [])
    assert mesh.widen(shape, 1.0).vertices[0] == pytest.approx((0.9, 1.2, 2.0))  # r 0.5 -> 1.5
