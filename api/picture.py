"""A model's picture from its mesh: a small SVG drawn by a pure function, no dependencies.

The mesh (mescache.mesh, millimetres, triangles wound counter-clockwise seen from
outside) is seen from above and to the front-right in an orthographic projection. Faces
turned away are dropped (the mesh is closed, so they are hidden anyway), the rest are
flat-shaded by one directional light and drawn far to near (the painter's algorithm,
exact enough for the convex-ish pieces of a jewellery catalogue). Neighbouring faces of
the same shade share one ``<path>`` (of a class per shade level), and each path is
stroked in its own colour so that anti-aliasing leaves no seams between faces.

The output is bounded: at most `MAX_FACES` faces are drawn (past that the smallest on
screen are left out, the ones a viewer cannot see at this size), with coordinates
rounded to a tenth of a pixel, so a picture stays under about 250 KB whatever the mesh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

from mescache.mesh import Mesh, Vertex

MIN_SIZE: Final = 64
MAX_SIZE: Final = 1024
DEFAULT_SIZE: Final = 320
MAX_FACES: Final = 4000
SHADES: Final = 48  # light levels; fewer merge more faces into one path
_MARGIN: Final = 0.06  # of the picture's side, left free around the piece

# Seen from 35° above the horizon, 30° to the right of the front (-y) direction.
_ELEVATION: Final = math.radians(35)
_AZIMUTH: Final = math.radians(-60)
# The light: from the upper left, a little in front.
_LIGHT: Final = (-0.45, -0.35, 0.82)
_AMBIENT: Final = 0.28


@dataclass(frozen=True, slots=True)
class Colour:
    """A shade's base colour, 0-255 per channel."""

    red: int
    green: int
    blue: int

    def scaled(self, factor: float) -> str:
        """The colour scaled by `factor` (clamped), as `#rrggbb`."""
        r, g, b = (max(0, min(255, round(c * factor))) for c in (self.red, self.green, self.blue))
        return f"#{r:02x}{g:02x}{b:02x}"


GOLD: Final = Colour(0xD4, 0xAF, 0x5A)


def _unit(v: Vertex) -> Vertex:
    length = math.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)
    return (0.0, 0.0, 0.0) if length == 0 else (v[0] / length, v[1] / length, v[2] / length)


def _cross(a: Vertex, b: Vertex) -> Vertex:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: Vertex, b: Vertex) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _sub(a: Vertex, b: Vertex) -> Vertex:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


@dataclass(frozen=True, slots=True)
class Camera:
    """An orthographic view: `toward` points from the piece to the viewer."""

    toward: Vertex
    right: Vertex
    up: Vertex

    @classmethod
    def looking(cls, elevation: float, azimuth: float) -> Camera:
        """A camera looking down at `elevation` and around at `azimuth` (radians)."""
        toward = (
            math.cos(elevation) * math.cos(azimuth),
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
        )
        right = _unit(_cross((0.0, 0.0, 1.0), toward))
        return cls(toward, right, _cross(toward, right))

    def project(self, v: Vertex) -> tuple[float, float, float]:
        """Screen x (right), screen y (up) and depth (larger is nearer)."""
        return _dot(v, self.right), _dot(v, self.up), _dot(v, self.toward)


DEFAULT_CAMERA: Final = Camera.looking(_ELEVATION, _AZIMUTH)


@dataclass(frozen=True, slots=True)
class Face:
    """A visible triangle on screen: its corners (pixels), depth and shade level."""

    corners: tuple[tuple[float, float], ...]
    depth: float
    area: float
    shade: int


def visible_faces(mesh: Mesh, size: int, camera: Camera = DEFAULT_CAMERA) -> list[Face]:
    """The faces turned towards the viewer, in pixels of a `size`-pixel square, far first."""
    if not mesh.vertices or not mesh.triangles:
        return []
    projected = [camera.project(v) for v in mesh.vertices]
    xs = [p[0] for p in projected]
    ys = [p[1] for p in projected]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    scale = size * (1 - 2 * _MARGIN) / span
    # Centre the piece; screen y grows downwards.
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    screen = [(size / 2 + (p[0] - cx) * scale, size / 2 - (p[1] - cy) * scale) for p in projected]
    light = _unit(_LIGHT)
    faces: list[Face] = []
    for a, b, c in mesh.triangles:
        va, vb, vc = mesh.vertices[a], mesh.vertices[b], mesh.vertices[c]
        normal = _cross(_sub(vb, va), _sub(vc, va))
        if _dot(normal, camera.toward) <= 0:
            continue  # turned away (or edge-on): hidden behind the front of a closed mesh
        brightness = _AMBIENT + (1 - _AMBIENT) * max(0.0, _dot(_unit(normal), light))
        (xa, ya), (xb, yb), (xc, yc) = screen[a], screen[b], screen[c]
        area = abs((xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)) / 2
        depth = (projected[a][2] + projected[b][2] + projected[c][2]) / 3
        shade = min(SHADES - 1, int(brightness * SHADES))
        faces.append(Face((screen[a], screen[b], screen[c]), depth, area, shade))
    if len(faces) > MAX_FACES:
        faces = sorted(faces, key=lambda f: f.area, reverse=True)[:MAX_FACES]
    faces.sort(key=lambda f: f.depth)
    return faces


def _number(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _path(corners: Sequence[tuple[float, float]]) -> str:
    (x0, y0), *rest = corners
    return (
        f"M{_number(x0)} {_number(y0)}"
        + "".join(f"L{_number(x)} {_number(y)}" for x, y in rest)
        + "Z"
    )


def render_svg(mesh: Mesh, size: int = DEFAULT_SIZE, title: str = "", colour: Colour = GOLD) -> str:
    """The picture as an SVG document of `size` by `size` pixels."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size {size} outside {MIN_SIZE}..{MAX_SIZE}")
    faces = visible_faces(mesh, size)
    used = sorted({face.shade for face in faces})
    # One class per shade level used: a path then costs a few bytes more than its corners.
    style = "".join(
        f".s{shade}{{fill:{colour.scaled((shade + 0.5) / SHADES)};"
        f"stroke:{colour.scaled((shade + 0.5) / SHADES)}}}"
        for shade in used
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}"'
        f' viewBox="0 0 {size} {size}" role="img">',
        f"<title>{escape(title)}</title>",
        f"<style>path{{stroke-width:.6;stroke-linejoin:round}}{style}</style>",
    ]
    run: list[str] = []
    shade: int | None = None
    for face in faces:
        if face.shade != shade:
            if run:
                parts.append(f'<path class="s{shade}" d="{"".join(run)}"/>')
                run.clear()
            shade = face.shade
        run.append(_path(face.corners))
    if run:
        parts.append(f'<path class="s{shade}" d="{"".join(run)}"/>')
    parts.append("</svg>")
    return "".join(parts)
