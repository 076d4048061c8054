"""Seeded procedural multi-label hearts for the demo, the tests and the benchmark.

Anatomy is built in a heart-local frame (millimetres): +z runs from the LV apex to the base, +x toward
the patient's left, +y anterior. Each structure is a union of primitives (truncated ellipsoids, tubes
swept along polylines) painted in a fixed order, so later structures win where they overlap. The heart
is then posed in world RAS coordinates with a random proper rotation (never a mirror: hearts are
chiral) and written on an image grid with anisotropic spacing and an oblique, LPS-like affine, as CT
label maps come out of DICOM converters. Only each primitive's bounding box of the grid is evaluated,
so real-size (512×512×256) cases take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path

import numpy as np

from vecset.data.label_image import write_label_image
from vecset.geometry import random_rotation, voxel_to_world, world_to_voxel

STRUCTURES = (
    "myocardium",
    "left_atrium",
    "left_ventricle",
    "right_atrium",
    "right_ventricle",
    "aorta",
    "pulmonary_artery",
    "left_atrial_appendage",
    "coronary_arteries",
    "pulmonary_veins",
)
# Painting order: later entries overwrite earlier ones where primitives overlap.
PAINT_ORDER = (
    "pulmonary_veins",
    "left_atrial_appendage",
    "left_atrium",
    "right_atrium",
    "right_ventricle",
    "pulmonary_artery",
    "aorta",
    "myocardium",
    "left_ventricle",
    "coronary_arteries",
)
# (shape, in-plane spacing range mm, slice spacing range mm)
SIZES = {
    "demo": ((96, 96, 80), (1.45, 1.75), (1.8, 2.2)),
    "real": ((512, 512, 256), (0.33, 0.42), (0.5, 0.6)),
}


@dataclass(frozen=True)
class Ellipsoid:
    center: np.ndarray  # (3,) local mm
    radii: np.ndarray  # (3,) semi-axes along local x, y, z
    z_max: float = np.inf  # truncation plane (local z), e.g. the valve plane

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.center - self.radii, self.center + self.radii
        hi = hi.copy()
        hi[2] = min(hi[2], self.z_max)
        return lo, hi

    def inside(self, p: np.ndarray) -> np.ndarray:
        q = (p - self.center) / self.radii
        return (np.einsum("ij,ij->i", q, q) <= 1.0) & (p[:, 2] <= self.z_max)


@dataclass(frozen=True)
class Capsule:
    """A tube segment from ``a`` to ``b`` whose radius varies linearly from ``ra`` to ``rb``."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = max(self.ra, self.rb)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def inside(self, p: np.ndarray) -> np.ndarray:
        ab = self.b - self.a
        t = np.clip((p - self.a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        closest = self.a + t[:, None] * ab
        radius = self.ra + t * (self.rb - self.ra)
        return np.einsum("ij,ij->i", p - closest, p - closest) <= radius**2


def tube(points: Sequence[np.ndarray] | np.ndarray, radii: Sequence[float] | np.ndarray | float) -> list[Capsule]:
    """A swept tube along a polyline, radius interpolated per vertex."""
    pts = np.asarray(points, dtype=np.float64)
    rad = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
    return [Capsule(pts[i], pts[i + 1], float(rad[i]), float(rad[i + 1])) for i in range(len(pts) - 1)]


def _curve(control: Sequence[Sequence[float] | np.ndarray], n: int = 16) -> np.ndarray:
    ctrl = np.asarray(control, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n)
    k = len(ctrl) - 1
    basis = np.stack([comb(k, i) * t**i * (1 - t) ** (k - i) for i in range(k + 1)], axis=1)
    return basis @ ctrl


def _epicardial_path(outer: Ellipsoid, angles: np.ndarray, heights: np.ndarray, lift: float) -> np.ndarray:
    """Points on (and ``lift`` mm outside) the outer myocardial ellipsoid at azimuths and local heights."""
    c, r = outer.center, outer.radii
    s = np.clip((heights - c[2]) / r[2], -0.98, 0.98)
    ring = np.sqrt(1 - s**2)
    x = c[0] + r[0] * ring * np.cos(angles)
    y = c[1] + r[1] * ring * np.sin(angles)
    pts = np.stack([x, y, heights], axis=1)
    normal = (pts - c) / r**2
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return pts + lift * normal


def heart_primitives(rng: np.random.Generator) -> dict[str, list]:
    """The primitives of each structure in the heart-local frame, with per-case size and thickness."""
    s = rng.uniform(0.85, 1.15)  # overall size
    t = rng.uniform(7.0, 11.0) * s  # myocardial wall thickness
    e = rng.uniform(0.9, 1.1, size=3)  # per-axis elongation of the LV
    lv = Ellipsoid(np.array([0.0, 0.0, -8.0 * s]), np.array([21.0, 21.0, 48.0]) * s * e, z_max=0.0)
    outer = Ellipsoid(lv.center, lv.radii + t, z_max=0.0)
    j = lambda scale=3.0: rng.normal(0.0, scale * s, size=3)  # noqa: E731 - per-landmark jitter
    la_c = np.array([4.0, -22.0, 20.0]) * s + j()
    ra_c = np.array([-30.0, -10.0, 18.0]) * s + j()
    prims: dict[str, list] = {
        "left_ventricle": [lv],
        "myocardium": [outer],
        "right_ventricle": [
            Ellipsoid(np.array([-20.0, 8.0, -14.0]) * s + j(2), np.array([24.0, 26.0, 40.0]) * s, z_max=3.0 * s)
        ],
        "left_atrium": [Ellipsoid(la_c, np.array([21.0, 16.0, 16.0]) * s * rng.uniform(0.9, 1.1))],
        "right_atrium": [Ellipsoid(ra_c, np.array([19.0, 17.0, 22.0]) * s * rng.uniform(0.9, 1.1))],
        "left_atrial_appendage": tube(
            _curve([la_c + np.array(d) * s for d in ([12, 10, 4], [24, 18, 6], [30, 24, -2])], 8),
            np.linspace(7.0, 3.5, 8) * s,
        ),
    }
    aorta = _curve(
        [
            [0, 6 * s, -2 * s],
            [-4 * s, 10 * s, 40 * s],
            [0, -20 * s, 70 * s],
            [8 * s, -40 * s, 40 * s],
            [10 * s, -38 * s, -40 * s],
        ],
        24,
    ) + j(2)
    prims["aorta"] = tube(aorta, np.linspace(13.0, 10.0, len(aorta)) * s)
    trunk = _curve([[-14 * s, 22 * s, 2 * s], [-10 * s, 28 * s, 25 * s], [-2 * s, 14 * s, 38 * s]], 8) + j(2)
    lpa = _curve([trunk[-1], trunk[-1] + [18 * s, -6 * s, 6 * s], trunk[-1] + [32 * s, -22 * s, 0]], 8)
    rpa = _curve([trunk[-1], trunk[-1] + [-16 * s, -10 * s, 4 * s], trunk[-1] + [-34 * s, -24 * s, -2 * s]], 8)
    prims["pulmonary_artery"] = (
        tube(trunk, 12.0 * s) + tube(lpa, np.linspace(10.0, 7.0, 8) * s) + tube(rpa, np.linspace(10.0, 7.0, 8) * s)
    )
    veins = []
    for side in (-1.0, 1.0):
        for dz in (-7.0, 7.0):
            start = la_c + np.array([side * 12.0, -6.0, dz]) * s
            end = start + np.array([side * 18.0, -16.0, dz * 1.5]) * s + j(2)
            veins += tube([start, end], [6.0 * s, 5.0 * s])
    prims["pulmonary_veins"] = veins
    lift = 1.8 * s  # coronary radius + a little: they run on the epicardium
    heights = np.linspace(-2.0, -40.0, 14) * s
    lad = _epicardial_path(outer, np.linspace(1.9, 1.5, 14) + rng.normal(0, 0.05), heights, lift)
    lcx = _epicardial_path(outer, np.linspace(1.4, -1.2, 14), np.full(14, -4.0 * s), lift)
    rca = _epicardial_path(outer, np.linspace(2.2, 4.2, 14), np.linspace(-4.0, -20.0, 14) * s, lift + 6 * s)
    prims["coronary_arteries"] = tube(lad, 1.6 * s) + tube(lcx, 1.5 * s) + tube(rca, 1.7 * s)
    return prims


def heart_pose(rng: np.random.Generator) -> np.ndarray:
    """Local → world RAS rotation: the long axis points from apex (left, anterior, inferior) to base."""
    base_dir = np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)  # apex→base: toward right, posterior, superior
    left = np.array([-1.0, 0.3, 0.0])
    left -= left @ base_dir * base_dir
    left /= np.linalg.norm(left)
    anterior = np.cross(base_dir, left)  # right-handed: x × y = z  ⇒  y = z × x
    rot = np.stack([left, anterior, base_dir], axis=1)
    return random_rotation(rng, 12.0) @ rot


def image_affine(rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray) -> np.ndarray:
    """An LPS-style (x and y flipped), slightly oblique affine centred near the world origin."""
    direction = random_rotation(rng, 8.0) @ np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    center_voxel = (np.asarray(shape) - 1) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ center_voxel + rng.normal(0.0, 3.0, size=3)
    return affine


def paint(
    volume: np.ndarray, affine: np.ndarray, to_local: tuple[np.ndarray, np.ndarray], primitive, value: int
) -> None:
    """Set ``value`` in every voxel whose centre lies inside ``primitive`` (local frame)."""
    rot, origin = to_local  # local = rot.T @ (world - origin)
    lo, hi = primitive.bounds()
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = world_to_voxel(corners @ rot.T + origin, affine)
    start = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    stop = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, volume.shape)
    if np.any(stop <= start):
        return
    grid = np.stack(
        np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(start, stop, strict=True)), indexing="ij"),
        axis=-1,
    ).reshape(-1, 3)
    local = (voxel_to_world(grid, affine.astype(np.float32)) - origin.astype(np.float32)) @ rot.astype(np.float32)
    hit = primitive.inside(local).reshape(tuple(stop - start))
    block = volume[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    block[hit] = value


def make_phantom(
    seed: int | Sequence[int], labels: dict[str, int], size: str = "demo", shape: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A phantom label map (raw values from ``labels``) and its affine, drawn from ``seed`` (an int, or a sequence
    such as the demo_case rule's [seed, case number]). Structures not named in ``labels``
    are left out; names in ``labels`` that the generator does not know stay absent.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    default_shape, inplane, through = SIZES[size]
    grid: tuple[int, ...] = tuple(shape or default_shape)
    rng = np.random.default_rng(seed)
    spacing = np.array([rng.uniform(*inplane)] * 2 + [rng.uniform(*through)])
    fov_scale = np.asarray(default_shape) / np.asarray(grid)
    affine = image_affine(rng, grid, spacing * fov_scale)
    rot = heart_pose(rng)
    origin = rng.normal(0.0, 4.0, size=3) + rot @ np.array([0.0, 0.0, 5.0])
    # The smallest voxel type that holds every raw value (a label map's values can be any positive integer).
    top = max(labels.values(), default=0)
    dtype = next(t for t in (np.uint8, np.int16, np.int32, np.int64) if top <= np.iinfo(t).max)
    volume = np.zeros(grid, dtype=dtype)
    prims = heart_primitives(rng)
    for name in PAINT_ORDER:
        if name in labels:
            for prim in prims[name]:
                paint(volume, affine, (rot, origin), prim, labels[name])
    return volume, affine


def write_phantom(path: str | Path, seed: int | Sequence[int], labels: dict[str, int], size: str = "demo") -> None:
    """Write a phantom as a gzip NIfTI, atomically."""
    write_label_image(path, *make_phantom(seed, labels, size))
