"""Procedural jewellery meshes for the demo catalogue: rings as tori, comfort-fit wedding
bands, pendants with a bail, hoop earrings, bracelet links and petal brooches.

Each shape is a closed, outward-wound triangle mesh of a few thousand triangles, in
millimetres; rings are modelled around the z axis at a given inner diameter so that
`mescache.mesh.widen` resizes them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from mescache.mesh import Mesh, Triangle, Vertex, measure

Surface = Callable[[float, float], Vertex]


def _signed(value: float, power: float) -> float:
    return math.copysign(abs(value) ** power, value)


def _orient(mesh: Mesh) -> Mesh:
    """Wind the triangles outwards (a positive volume) whatever the parametrisation did."""
    if measure(mesh).volume_mm3 >= 0:
        return mesh
    return Mesh(mesh.vertices, [(a, c, b) for a, b, c in mesh.triangles])


def torus_grid(nu: int, nv: int, surface: Surface) -> Mesh:
    """A surface closed in both parameters (u, v in [0, 2π))."""
    vertices = [
        surface(2 * math.pi * i / nu, 2 * math.pi * j / nv) for i in range(nu) for j in range(nv)
    ]
    triangles: list[Triangle] = []
    for i in range(nu):
        for j in range(nv):
            a, b = i * nv + j, ((i + 1) % nu) * nv + j
            c, d = ((i + 1) % nu) * nv + (j + 1) % nv, i * nv + (j + 1) % nv
            triangles += [(a, b, c), (a, c, d)]
    return _orient(Mesh(vertices, triangles))


def sphere_grid(nu: int, nv: int, surface: Surface) -> Mesh:
    """A surface closed in u ([0, 2π)) with poles at v = 0 and v = π."""
    vertices: list[Vertex] = [surface(0.0, 0.0)]
    for j in range(1, nv):
        vertices += [surface(2 * math.pi * i / nu, math.pi * j / nv) for i in range(nu)]
    vertices.append(surface(0.0, math.pi))
    south = len(vertices) - 1

    def ring(j: int, i: int) -> int:
        return 1 + (j - 1) * nu + i % nu

    triangles: list[Triangle] = [(0, ring(1, i), ring(1, i + 1)) for i in range(nu)]
    for j in range(1, nv - 1):
        for i in range(nu):
            a, b = ring(j, i), ring(j, i + 1)
            c, d = ring(j + 1, i + 1), ring(j + 1, i)
            triangles += [(a, d, c), (a, c, b)]
    triangles += [(south, ring(nv - 1, i + 1), ring(nv - 1, i)) for i in range(nu)]
    return _orient(Mesh(vertices, triangles))


def join(*meshes: Mesh) -> Mesh:
    """Several closed parts as one mesh (volumes and surfaces add up)."""
    vertices: list[Vertex] = []
    triangles: list[Triangle] = []
    for mesh in meshes:
        base = len(vertices)
        vertices += mesh.vertices
        triangles += [(a + base, b + base, c + base) for a, b, c in mesh.triangles]
    return Mesh(vertices, triangles)


def moved(mesh: Mesh, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> Mesh:
    """The mesh translated by (dx, dy, dz)."""
    return Mesh([(x + dx, y + dy, z + dz) for x, y, z in mesh.vertices], mesh.triangles)


def ring(inner_diameter: float, wire: float, nu: int = 64, nv: int = 24) -> Mesh:
    """A round-wire ring: a torus around z whose hole is `inner_diameter` mm."""
    r = wire / 2
    big = inner_diameter / 2 + r
    return torus_grid(
        nu,
        nv,
        lambda u, v: (
            (big + r * math.cos(v)) * math.cos(u),
            (big + r * math.cos(v)) * math.sin(u),
            r * math.sin(v),
        ),
    )


def wedding_band(inner_diameter: float, width: float, thickness: float) -> Mesh:
    """A comfort-fit band: a rounded-rectangle (superellipse) profile swept around z."""
    centre = inner_diameter / 2 + thickness / 2

    def point(u: float, v: float) -> Vertex:
        radial = centre + thickness / 2 * _signed(math.cos(v), 0.5)
        return (radial * math.cos(u), radial * math.sin(u), width / 2 * _signed(math.sin(v), 0.5))

    return torus_grid(72, 24, point)


def pendant(width: float, height: float, depth: float) -> Mesh:
    """A domed oval disc with a bail (a small torus) on top to hang it from."""

    def disc(u: float, v: float) -> Vertex:
        s = math.sin(v)
        return (
            width / 2 * _signed(s * math.cos(u), 0.7),
            height / 2 * _signed(s * math.sin(u), 0.7),
            depth / 2 * _signed(math.cos(v), 0.7),
        )

    bail_r, wire = 1.6, 0.9
    bail = torus_grid(
        24,
        12,
        lambda u, v: (
            wire / 2 * math.sin(v),
            (bail_r + wire / 2 * math.cos(v)) * math.cos(u),
            (bail_r + wire / 2 * math.cos(v)) * math.sin(u),
        ),
    )
    return join(sphere_grid(48, 24, disc), moved(bail, dy=height / 2 + bail_r))


def earring(hoop_diameter: float, wire: float, bead: float) -> Mesh:
    """A hoop with a bead at its bottom."""

    def ball(u: float, v: float) -> Vertex:
        return (
            bead / 2 * math.sin(v) * math.cos(u),
            bead / 2 * math.sin(v) * math.sin(u),
            bead / 2 * math.cos(v),
        )

    hoop = ring(hoop_diameter, wire, nu=48, nv=16)
    return join(hoop, moved(sphere_grid(24, 12, ball), dx=-(hoop_diameter / 2 + wire + bead / 2)))


def bracelet_link(length: float, width: float, wire: float) -> Mesh:
    """An oval link: a torus stretched along x."""
    base = ring(width - wire, wire, nu=64, nv=20)
    stretch = length / width
    return Mesh([(x * stretch, y, z) for x, y, z in base.vertices], base.triangles)


def brooch(diameter: float, depth: float, petals: int) -> Mesh:
    """A flattened flower: a squashed sphere whose rim waves in `petals` lobes."""

    def point(u: float, v: float) -> Vertex:
        r = diameter / 2 * (0.8 + 0.2 * math.cos(petals * u)) * math.sin(v)
        return (r * math.cos(u), r * math.sin(u), depth / 2 * math.cos(v))

    return sphere_grid(96, 24, point)


def demo_shape(kind: str, rng: random.Random, inner_diameter: float) -> Mesh:
    """A plausible piece of `kind` with random proportions (rings at `inner_diameter`)."""
    if kind == "ring":
        return ring(inner_diameter, rng.uniform(1.4, 2.6))
    if kind == "wedding ring":
        return wedding_band(inner_diameter, rng.uniform(2.5, 6.0), rng.uniform(1.3, 2.2))
    if kind == "pendant":
        return pendant(rng.uniform(10, 22), rng.uniform(12, 28), rng.uniform(1.5, 4.0))
    if kind == "earring":
        return earring(rng.uniform(10, 24), rng.uniform(0.8, 1.6), rng.uniform(2.0, 5.0))
    if kind == "bracelet link":
        return bracelet_link(rng.uniform(12, 20), rng.uniform(7, 11), rng.uniform(1.2, 2.4))
    return brooch(rng.uniform(20, 40), rng.uniform(3, 7), rng.randint(4, 8))
