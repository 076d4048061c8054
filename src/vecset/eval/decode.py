"""A per-class SDF sampled on a regular grid over the normalised cube [-1, 1]^3: dense, or coarse-to-fine.

Grids are (C, R, R, R) float32 tensors, axes x, y, z, node ``i`` at ``-1 + 2 i / (R - 1)`` on every axis.

Coarse-to-fine (after FlashVDM's hierarchical decoding): decode a coarse grid densely, then halve the cells
level by level. A child of a decoded cell is decoded (its corners) unless, for every structure, one of the
parent's exact corners proves that the structure has no zero inside the child: for an SDF whose slope is at
most ``slope``, ``|f(q)| > slope × (the child's farthest distance from q)``. A child left out then has, per
structure, one sign throughout: the sign at the parent corner it shares. Its nodes, and every finer node
inside it, take the trilinear interpolation of the coarser level with that sign. So every cell that marching
cubes meshes has all eight corners decoded and every node has the sign dense decoding gives it: meshes equal
dense decoding, and the label map does wherever at most one structure is inside. A trained network's slope
is not bounded by 1; ``bench/decode.py`` measures it, and the result against dense decoding.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vecset.settings import EvalSettings

# Normalised points (N, 3) float32 → normalised signed distances (N, C) float32, on one device.
SdfFunction = Callable[[torch.Tensor], torch.Tensor]

# The coarsest level has at least this many cells per axis: small enough to cost nothing (17³ points),
# large enough that a thin tube's |SDF| at the nearest corner stays within a few cells.
COARSEST_CELLS = 16


@dataclass(frozen=True)
class DecodedGrid:
    """A decoded grid and what it cost: points decoded (R³ for dense) and the resolution of each level."""

    values: torch.Tensor  # (C, R, R, R) float32
    decoded_points: int
    levels: tuple[int, ...]

    @property
    def resolution(self) -> int:
        return int(self.values.shape[-1])

    @property
    def dense_fraction(self) -> float:
        """Decoded points over the R³ a dense decoding costs."""
        return self.decoded_points / self.resolution**3


def numpy_sdf(function: Callable[[np.ndarray], np.ndarray]) -> SdfFunction:
    """An SDF of numpy points (N, 3) → (N, C) (an analytic shape, a case's exact mesh SDF) as an SdfFunction."""
    return lambda points: torch.as_tensor(np.asarray(function(points.double().cpu().numpy())), dtype=torch.float32)


def nested_resolution(resolution: int, coarsest_cells: int = COARSEST_CELLS) -> int:
    """The least resolution >= ``resolution`` whose cells halve evenly down to a coarsest grid of
    ``coarsest_cells`` to 2.5 times that many cells per axis (more halvings on a tie), so that coarse-to-fine
    levels nest: 128 → 129 (16 × 8 cells), 291 → 297 (37 × 8 cells)."""
    cells = resolution - 1
    if cells < coarsest_cells:
        return resolution
    options = []
    for halvings in range(1, 32):
        coarse = math.ceil(cells / 2**halvings)
        if coarse < coarsest_cells:
            break
        if coarse <= 2.5 * coarsest_cells:
            options.append((coarse * 2**halvings, -halvings))
    return min(options)[0] + 1 if options else resolution


def grid_resolution(scale: float, spacing_mm: float | None, resolution: int, max_resolution: int) -> int:
    """Grid points per axis for one case, nested (:func:`nested_resolution`): with ``spacing_mm``, enough for that
    spacing over the case's cube (``2 × scale`` mm across), at most about ``max_resolution``; without,
    ``resolution``."""
    if spacing_mm is not None:
        resolution = min(max_resolution, max(2 * COARSEST_CELLS + 1, math.ceil(2.0 * scale / spacing_mm) + 1))
    return nested_resolution(resolution)


def coarse_levels(resolution: int, coarsest_cells: int = COARSEST_CELLS) -> tuple[int, ...]:
    """Resolutions from the coarsest to ``resolution``, each with half the next one's cells (while those halve
    evenly and stay at least ``coarsest_cells``)."""
    levels = [resolution]
    while (levels[-1] - 1) % 2 == 0 and (levels[-1] - 1) // 2 >= coarsest_cells:
        levels.append((levels[-1] - 1) // 2 + 1)
    return tuple(reversed(levels))


def _evaluate(sdf: SdfFunction, points: torch.Tensor, chunk: int, bar: tqdm) -> torch.Tensor:
    """(C, N) SDF at ``points`` (N, 3), ``chunk`` points per call."""
    parts = []
    for start in range(0, len(points), chunk):
        parts.append(sdf(points[start : start + chunk]).float())
        bar.update(len(parts[-1]))
    return torch.cat(parts).T


def _nodes(resolution: int, device: torch.device) -> torch.Tensor:
    """The grid's coordinates along each axis of the normalised cube."""
    if resolution < 2:
        raise ValueError(f"grid resolution must be >= 2, got {resolution}")
    return torch.linspace(-1.0, 1.0, resolution, dtype=torch.float64, device=device).float()


def _bar(total: int | None, desc: str | None) -> tqdm:
    return tqdm(total=total, desc=desc, unit="pt", unit_scale=True, disable=desc is None, leave=False,
                file=sys.stderr, mininterval=2.0)  # fmt: skip


def decode_dense(
    sdf: SdfFunction, resolution: int, chunk: int = 65536, device: str | torch.device = "cpu", desc: str | None = None
) -> DecodedGrid:
    """The SDF at every node of the ``resolution``³ grid; with ``desc``, a progress bar on stderr."""
    device = torch.device(device)
    axis = _nodes(resolution, device)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    points = torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], dim=1)
    with _bar(len(points), desc) as bar:
        values = _evaluate(sdf, points, chunk, bar)
    return DecodedGrid(values.reshape(-1, resolution, resolution, resolution), resolution**3, (resolution,))


# The 8 corners of a cell and the 8 octants of its children, as 0/1 offsets (8, 3).
CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])


def _farthest(slope: float, child_edge: float) -> torch.Tensor:
    """(8 octants, 8 corners): ``slope`` × the farthest distance from a parent's corner to a point of one of its
    children: along an axis one child edge when the child touches that corner's side, else two."""
    per_axis = torch.where(CORNERS[:, None, :] == CORNERS[None, :, :], 1.0, 2.0)
    return slope * child_edge * per_axis.square().sum(-1).sqrt()


# Nodes left out take the interpolated value with the sign they are known to have, at least this far from 0.
SIGN_FLOOR = 1e-6
# Parent cells per pass: bounds the corner values (C, K, 8) and the index buffers of excluded children.
PARENTS_PER_PASS = 1 << 16


def _refine(coarse: torch.Tensor, fine: torch.Tensor, parents: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """The children (K', 3) of ``parents`` (K, 3 cells of ``coarse``, exact corners) that may hold a zero. A child
    is left out when, for every class, some parent corner's |SDF| exceeds ``bound`` (octant, corner): that class
    has no zero in it and keeps the sign of the parent corner the child shares, which its nodes in ``fine``
    (the next level, interpolated) are given."""
    kept = []
    offsets = CORNERS.to(parents.device)
    for start in range(0, len(parents), PARENTS_PER_PASS):
        cells = parents[start : start + PARENTS_PER_PASS]
        corners = cells[:, None, :] + offsets  # (K, 8, 3)
        v = coarse[:, corners[..., 0], corners[..., 1], corners[..., 2]]  # (C, K, 8)
        excluded = (v.abs()[:, :, None, :] > bound.to(v.device)).any(-1).all(0)  # (K, octant)
        children = 2 * cells[:, None, :] + offsets  # (K, octant, 3)
        kept.append(children[~excluded])
        which, octant = excluded.nonzero(as_tuple=True)
        if len(which):
            sign = torch.where(v[:, which, octant] < 0, -1.0, 1.0)  # the child of octant o touches corner o
            nodes = (children[which, octant][:, None, :] + offsets).reshape(-1, 3)
            at = (slice(None), nodes[:, 0], nodes[:, 1], nodes[:, 2])
            fine[at] = sign.repeat_interleave(8, dim=1) * fine[at].abs().clamp(min=SIGN_FLOOR)
    return torch.cat(kept)


def _corner_mask(cells: torch.Tensor, resolution: int) -> torch.Tensor:
    """(R, R, R) bool: the nodes that are a corner of one of ``cells`` (K, 3)."""
    mask = torch.zeros((resolution - 1,) * 3, device=cells.device)
    mask[cells[:, 0], cells[:, 1], cells[:, 2]] = 1.0
    return F.max_pool3d(mask[None, None], kernel_size=2, stride=1, padding=1)[0, 0] > 0


def decode_coarse_to_fine(
    sdf: SdfFunction,
    resolution: int,
    slope: float,
    chunk: int = 65536,
    device: str | torch.device = "cpu",
    desc: str | None = None,
    coarsest_cells: int = COARSEST_CELLS,
) -> DecodedGrid:
    """The ``resolution``³ grid (make it nested: :func:`nested_resolution`), decoded exactly in every cell where
    an SDF whose slope is at most ``slope`` can cross zero, sign-correct elsewhere (module docstring)."""
    device = torch.device(device)
    levels = coarse_levels(resolution, coarsest_cells)
    first = decode_dense(sdf, levels[0], chunk, device)
    values, decoded = first.values.to(device), first.decoded_points
    cells = levels[0] - 1
    parents = torch.stack(torch.meshgrid(*[torch.arange(cells, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
    with _bar(None, desc) as bar:
        bar.update(decoded)
        for level in levels[1:]:
            if (level - 1) != 2 * (values.shape[-1] - 1):
                raise ValueError(f"levels {levels} do not nest; use nested_resolution({resolution})")
            fine = F.interpolate(values[None], size=(level,) * 3, mode="trilinear", align_corners=True)[0]
            parents = _refine(values, fine, parents, _farthest(slope, 2.0 / (level - 1)))
            values = fine
            needed = _corner_mask(parents, level)
            needed[::2, ::2, ::2] = False  # the coarser level's nodes: exact already
            ijk = needed.nonzero()
            values[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]] = _evaluate(sdf, _nodes(level, device)[ijk], chunk, bar)
            decoded += len(ijk)
    return DecodedGrid(values, decoded, levels)


CPU = torch.device("cpu")
# Bytes per grid node while a case is decoded and scored: its (C, R, R, R) float32 values and their interpolated
# copy, the (R, R, R) corner mask and node coordinates; a margin for the label image's work is added in MB.
_GRID_BYTES_PER_NODE_PER_CLASS = 8
_GRID_BYTES_PER_NODE = 24
_DECODE_MARGIN_MB = 500


def grid_memory_mb(settings: EvalSettings, n_classes: int) -> int:
    """Memory (MB) one case's grid can take at the largest resolution ``settings`` allow."""
    largest = settings.max_resolution if settings.spacing_mm is not None else nested_resolution(settings.resolution)
    per_node = _GRID_BYTES_PER_NODE_PER_CLASS * n_classes + _GRID_BYTES_PER_NODE
    return int(largest**3 * per_node / 1e6) + _DECODE_MARGIN_MB


@dataclass(frozen=True)
class GridDecoder:
    """How a run's cases are decoded (the eval settings) and where (the model's device)."""

    settings: EvalSettings
    device: torch.device = CPU
    chunk: int = 65536

    def resolution(self, scale: float) -> int:
        """Grid points per axis for a case whose cube is ``2 × scale`` mm across."""
        s = self.settings
        return grid_resolution(scale, s.spacing_mm, s.resolution, s.max_resolution)

    def decode(self, sdf: SdfFunction, scale: float, desc: str | None = None) -> DecodedGrid:
        resolution = self.resolution(scale)
        if not self.settings.coarse_to_fine:
            return decode_dense(sdf, resolution, self.chunk, self.device, desc)
        return decode_coarse_to_fine(sdf, resolution, self.settings.refine_slope, self.chunk, self.device, desc)
