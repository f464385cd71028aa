"""The model picture: faces turned away are dropped, the rest drawn far to near, lit by
one light, inside the picture, and the output stays bounded whatever the mesh."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from api.picture import (
    DEFAULT_CAMERA,
    MAX_FACES,
    MAX_SIZE,
    MIN_SIZE,
    Camera,
    render_svg,
    visible_faces,
)
from mescache.mesh import Mesh, Triangle, Vertex, measure

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - what this test just rendered, not outside input


def cube(side: float = 10.0) -> Mesh:
    """A closed cube, wound outwards (a positive volume)."""
    s = side
    vertices: list[Vertex] = [
        (x, y, z) for x in (0.0, s) for y in (0.0, s) for z in (0.0, s)
    ]  # index = 4x + 2y + z
    quads = [
        (0, 1, 3, 2),  # x = 0
        (4, 6, 7, 5),  # x = s
        (0, 4, 5, 1),  # y = 0
        (2, 3, 7, 6),  # y = s
        (0, 2, 6, 4),  # z = 0
        (1, 5, 7, 3),  # z = s
    ]
    triangles: list[Triangle] = []
    for a, b, c, d in quads:
        triangles += [(a, b, c), (a, c, d)]
    made = Mesh(vertices, triangles)
    assert measure(made).volume_mm3 == pytest.approx(s**3)
    return made


def sphere(n: int) -> Mesh:
    """A UV sphere of about 2·n² triangles, wound outwards."""
    vertices: list[Vertex] = [(0.0, 0.0, 5.0), (0.0, 0.0, -5.0)]
    for i in range(1, n):
        theta = math.pi * i / n
        for j in range(n):
            phi = 2 * math.pi * j / n
            vertices.append(
                (
                    5 * math.sin(theta) * math.cos(phi),
                    5 * math.sin(theta) * math.sin(phi),
                    5 * math.cos(theta),
                )
            )

    def at(i: int, j: int) -> int:
        return 2 + (i - 1) * n + j % n

    triangles: list[Triangle] = []
    for j in range(n):
        triangles.append((0, at(1, j), at(1, j + 1)))
        triangles.append((1, at(n - 1, j + 1), at(n - 1, j)))
    for i in range(1, n - 1):
        for j in range(n):
            triangles += [
                (at(i, j), at(i + 1, j), at(i + 1, j + 1)),
                (at(i, j), at(i + 1, j + 1), at(i, j + 1)),
            ]
    made = Mesh(vertices, triangles)
    assert measure(made).volume_mm3 > 0
    return made


def test_a_cube_shows_its_three_faces_towards_the_viewer() -> None:
    faces = visible_faces(cube(), 320)
    # Seen from above, front and right: the top, the front (y = 0) and the right (x = s),
    # two triangles each; the three hidden faces are dropped.
    assert len(faces) == 6
    assert len({f.shade for f in faces}) == 3  # one flat shade per side


def test_faces_are_drawn_far_to_near_and_inside_the_picture() -> None:
    faces = visible_faces(sphere(24), 200)
    depths = [f.depth for f in faces]
    assert depths == sorted(depths)
    corners = [c for f in faces for c in f.corners]
    assert all(0 <= x <= 200 and 0 <= y <= 200 for x, y in corners)
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    # The piece fills the picture, centred, within the margin.
    assert max(max(xs) - min(xs), max(ys) - min(ys)) == pytest.approx(200 * 0.88, rel=0.01)
    assert (max(xs) + min(xs)) / 2 == pytest.approx(100, abs=1)


def test_the_light_comes_from_above() -> None:
    faces = visible_faces(cube(), 320)
    top = [f for f in faces if all(y < 160 for _, y in f.corners)]
    assert top, "the top of the cube is in the upper half"
    assert max(f.shade for f in faces) == top[0].shade


def test_the_camera_is_orthonormal_and_looks_down() -> None:
    cam: Camera = DEFAULT_CAMERA
    for a in (cam.toward, cam.right, cam.up):
        assert sum(c * c for c in a) == pytest.approx(1)
    assert sum(a * b for a, b in zip(cam.toward, cam.right, strict=True)) == pytest.approx(0)
    assert cam.toward[2] > 0  # from above
    assert cam.up[2] > 0  # the z axis points up on screen


def test_the_svg_is_well_formed_and_escapes_its_title() -> None:
    svg = render_svg(cube(), 256, title='<script>alert("x")</script> & co')
    root = parse(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("width") == root.get("height") == "256"
    assert root.findtext(f"{SVG}title") == '<script>alert("x")</script> & co'
    assert not root.findall(f".//{SVG}script")
    # Three visible sides, three shades, each a class with a fill colour.
    classes = {p.get("class") for p in root.findall(f"{SVG}path")}
    assert len(classes) == 3
    style = root.findtext(f"{SVG}style") or ""
    for name in classes:
        assert re.search(rf"\.{name}\{{fill:#[0-9a-f]{{6}};", style), style


def test_the_output_is_bounded_for_a_huge_mesh() -> None:
    big = sphere(110)  # about 24,000 triangles, half of them facing the viewer
    assert len(big.triangles) / 2 > MAX_FACES
    faces = visible_faces(big, 320)
    assert len(faces) == MAX_FACES
    svg = render_svg(big, 320)
    assert len(svg) < 60 * MAX_FACES  # about 35 bytes a face, and a little per path
    parse(svg)


def test_an_empty_mesh_is_an_empty_picture() -> None:
    root = parse(render_svg(Mesh([], []), 100))
    assert not root.findall(f"{SVG}path")


@pytest.mark.parametrize("size", [MIN_SIZE - 1, MAX_SIZE + 1])
def test_a_size_out_of_bounds_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        render_svg(cube(), size)
