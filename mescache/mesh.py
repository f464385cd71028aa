"""3D model geometry: a closed triangle mesh, its compact binary form, and its measures.

The stored form (``models.mesh``) is little-endian::

    b"MSH1"  uint32 vertex count  uint32 triangle count  float32 unit (mm per step)
    vertex count  x (int16, int16, int16)     coordinates in units of `unit`
    triangle count x (uint16, uint16, uint16) vertex indices, counter-clockwise seen from outside

Quantised coordinates (10 µm steps by default) and 16-bit indices keep a few thousand
triangles in a few tens of kilobytes. Decoding is strict: a short, long or inconsistent
buffer raises `MeshError` instead of being read past.

Measures are exact for the mesh: the volume by the divergence theorem (a sum of signed
tetrahedra from the origin, so the mesh must be closed and consistently wound), the
surface as the sum of triangle areas.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mescache.errors import MeshError

MAGIC: Final = b"MSH1"
_HEADER = struct.Struct("<4sIIf")
DEFAULT_UNIT_MM: Final = 0.01
_INT16 = 32767
_UINT16 = 65535

Vertex = tuple[float, float, float]
Triangle = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Mesh:
    """Vertices in millimetres and triangles as vertex indices."""

    vertices: Sequence[Vertex]
    triangles: Sequence[Triangle]


@dataclass(frozen=True, slots=True)
class Measures:
    """What a price is computed from: the mesh's volume and surface."""

    volume_mm3: float
    surface_mm2: float


def encode(mesh: Mesh, unit_mm: float = DEFAULT_UNIT_MM) -> bytes:
    """The compact form; raises MeshError if a coordinate or index does not fit."""
    nv, nt = len(mesh.vertices), len(mesh.triangles)
    if nv > _UINT16 + 1:
        raise MeshError(f"{nv} vertices: at most {_UINT16 + 1} fit 16-bit indices")
    coords: list[int] = []
    for vertex in mesh.vertices:
        for c in vertex:
            q = round(c / unit_mm)
            if not -_INT16 <= q <= _INT16:
                raise MeshError(f"coordinate {c} mm is out of range at {unit_mm} mm per step")
            coords.append(q)
    indices = [i for triangle in mesh.triangles for i in triangle]
    if indices and not 0 <= min(indices) <= max(indices) < nv:
        raise MeshError("a triangle names a vertex that does not exist")
    return b"".join(
        (
            _HEADER.pack(MAGIC, nv, nt, unit_mm),
            struct.pack(f"<{3 * nv}h", *coords),
            struct.pack(f"<{3 * nt}H", *indices),
        )
    )


def decode(data: bytes) -> Mesh:
    """The mesh of a stored form; MeshError if the buffer is not exactly one valid mesh."""
    if len(data) < _HEADER.size:
        raise MeshError(f"mesh of {len(data)} bytes is shorter than its header")
    magic, nv, nt, unit = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise MeshError(f"not a mesh (magic {magic!r})")
    expected = _HEADER.size + 6 * nv + 6 * nt
    if len(data) != expected:
        raise MeshError(f"mesh of {nv} vertices and {nt} triangles needs {expected} bytes")
    if not (math.isfinite(unit) and unit > 0):
        raise MeshError(f"mesh unit {unit} is not a positive length")
    offset = _HEADER.size
    flat = struct.unpack_from(f"<{3 * nv}h", data, offset)
    vertices = [
        (flat[i] * unit, flat[i + 1] * unit, flat[i + 2] * unit) for i in range(0, len(flat), 3)
    ]
    idx = struct.unpack_from(f"<{3 * nt}H", data, offset + 6 * nv)
    if idx and max(idx) >= nv:
        raise MeshError(f"a triangle names vertex {max(idx)} of {nv}")
    triangles = [(idx[i], idx[i + 1], idx[i + 2]) for i in range(0, len(idx), 3)]
    return Mesh(vertices, triangles)


def measure(mesh: Mesh) -> Measures:
    """Volume and surface of a closed mesh."""
    v = mesh.vertices
    six_volume = 0.0
    twice_area = 0.0
    for a, b, c in mesh.triangles:
        ax, ay, az = v[a]
        bx, by, bz = v[b]
        cx, cy, cz = v[c]
        # signed volume of the tetrahedron (origin, a, b, c), times six
        six_volume += ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx)
        ux, uy, uz = bx - ax, by - ay, bz - az
        wx, wy, wz = cx - ax, cy - ay, cz - az
        nx, ny, nz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
        twice_area += math.sqrt(nx * nx + ny * ny + nz * nz)
    return Measures(volume_mm3=six_volume / 6, surface_mm2=twice_area / 2)


def widen(mesh: Mesh, delta_mm: float) -> Mesh:
    """Move every vertex `delta_mm` away from the z axis: a ring modelled around z, resized
    to a larger (or, negative, smaller) inner diameter with the same band profile."""
    if delta_mm == 0:
        return mesh
    moved: list[Vertex] = []
    for x, y, z in mesh.vertices:
        r = math.hypot(x, y)
        k = (r + delta_mm) / r if r > 0 else 1.0
        moved.append((x * k, y * k, z))
    return Mesh(moved, mesh.triangles)
