"""From a per-class SDF grid to per-structure meshes in world mm and a label map on the source image grid.

The grid (C, R, R, R) holds normalised signed distances (negative inside) at the nodes of a regular grid over
the normalised cube [-1, 1]^3 (vecset.eval.decode: dense or coarse-to-fine). Meshes come from marching cubes
at level 0, per class on the part of the grid around that class's inside; the label map from trilinear
interpolation of the grid at every voxel centre of the source image inside the cube (each voxel takes the
structure with the most negative SDF; background where all are positive). ``x_mm = x_norm * scale + center``
and the NIfTI affine carry everything to and from millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import marching_cubes

from vecset.data.mesh import Mesh, signed_volume
from vecset.data.ply import write_ply
from vecset.geometry import mask_box, world_to_voxel
from vecset.settings import EvalSettings

# Voxels of the source image interpolated per call: bounds the (C, N) buffer (40 MB for ten classes).
VOXELS_PER_BATCH = 1 << 20


def partition_field(grid: torch.Tensor, sliver_cells: float, background: torch.Tensor | None = None) -> torch.Tensor:
    """Per-class fields (C, R, R, R) whose insides partition the grid: ``φ_c = s_c − min(s_k for k ≠ c, b)`` is
    negative exactly where class c beats every other class and the background ``b``. Where SDFs overlap, the
    point goes to the most negative one (the overlap is split at its bisector). The background's field is
    ``b = max(−s₁, τ − s₂)`` (s₁ ≤ s₂ the two smallest SDFs, τ = ``sliver_cells`` grid cells): ``−s₁`` away from
    the structures, and it loses a point outside every structure whose distances to the two nearest surfaces add
    up to less than τ, a sliver between two walls, to the nearer structure. Where classes a and b are a point's
    two best, ``φ_a = −φ_b``, so marching cubes puts the same vertices on both sides of their wall. ``background``:
    :func:`partition_background` when already computed."""
    values = torch.nan_to_num(grid.float(), nan=1.0)  # undecoded points: outside, as grid_meshes reads them
    n_classes = values.shape[0]
    if background is None:
        background = partition_background(grid, sliver_cells)
    everything = torch.cat([values, background[None]])
    best, which = torch.topk(everything, k=2, dim=0, largest=False)
    classes = torch.arange(n_classes, device=values.device).view(-1, 1, 1, 1)
    other = torch.where(which[0][None] == classes, best[1][None], best[0][None])
    return values - other


def partition_background(grid: torch.Tensor, sliver_cells: float) -> torch.Tensor:
    """The background's field (R, R, R) of :func:`partition_field`: ``max(−s₁, τ − s₂)``."""
    values = torch.nan_to_num(grid.float(), nan=1.0)
    n_classes, resolution = values.shape[0], values.shape[-1]
    tau = sliver_cells * 2.0 / (resolution - 1)
    smallest = torch.topk(values, k=min(2, n_classes), dim=0, largest=False).values
    second = smallest[1] if n_classes > 1 else torch.full_like(smallest[0], float("inf"))
    return torch.maximum(-smallest[0], tau - second)


@dataclass(frozen=True)
class Extraction:
    """What a reconstruction's meshes and label map are extracted from: per-class fields whose level 0 are the
    meshes, and for the label map the decoded SDFs with, under ``eval.partition``, the background's field."""

    mesh_fields: torch.Tensor  # (C, R, R, R)
    sdf: torch.Tensor  # (C, R, R, R)
    background: torch.Tensor | None  # (R, R, R)


def extraction(grid: torch.Tensor, settings: EvalSettings) -> Extraction:
    """The decoded SDFs as they are, or with ``eval.partition`` their partition (:func:`partition_field`)."""
    if not settings.partition:
        return Extraction(grid, grid, None)
    background = partition_background(grid, settings.partition_sliver_cells)
    return Extraction(partition_field(grid, settings.partition_sliver_cells, background), grid, background)


def grid_meshes(grid: torch.Tensor, center: np.ndarray, scale: float) -> list[Mesh]:
    """One closed, outward mesh per class from the SDF grid (C, R, R, R), in world mm; empty where a class has
    no inside."""
    resolution = grid.shape[-1]
    step = 2.0 / (resolution - 1)
    meshes = []
    for channel in grid:
        volume = np.nan_to_num(channel.float().cpu().numpy(), nan=1.0)
        # Every negative node and one beyond: marching cubes there gives exactly the triangles of the whole grid.
        box = mask_box(volume < 0)
        if box is None or not volume.max() > 0:
            meshes.append(Mesh.empty())
            continue
        # Pad with "outside" so surfaces touching the box's (or the cube's) faces still close.
        padded = np.pad(volume[box], 1, constant_values=max(float(volume.max()), step))
        verts, faces, _, _ = marching_cubes(padded, level=0.0, spacing=(step, step, step))
        offset = np.array([s.start for s in box], dtype=np.float64) * step
        verts = verts - step + offset - 1.0  # undo the pad and the box, then grid index 0 → -1
        faces = faces.astype(np.int64)
        if signed_volume(verts, faces) < 0:
            faces = faces[:, ::-1].copy()
        meshes.append(Mesh(verts * scale + center, faces))
    return meshes


def write_meshes(out_dir: str | Path, case_id: str, names: list[str], meshes: list[Mesh]) -> list[Path]:
    """``out_dir``/{name}.ply for every structure (world mm), each naming its case and structure."""
    paths = [Path(out_dir) / f"{name}.ply" for name in names]
    for path, name, mesh in zip(paths, names, meshes, strict=True):
        write_ply(path, mesh.vertices, mesh.faces, comments=[f"case {case_id}", f"structure {name}"])
    return paths


def _cube_voxel_box(center: np.ndarray, scale: float, affine: np.ndarray, shape: tuple[int, int, int]) -> tuple:
    """Index ranges of the source voxels whose centres can lie inside the normalised cube."""
    corners = np.array(np.meshgrid([-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0], indexing="ij")).reshape(3, -1).T
    ijk = world_to_voxel(corners * scale + center, affine)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, np.array(shape))
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, np.array(shape))
    return tuple(range(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


@dataclass(frozen=True)
class ImageLabels:
    """A reconstruction on the source image grid."""

    labels: np.ndarray  # (I, J, K) raw label values: the structure with the most negative SDF, 0 for background
    overlap_voxels: np.ndarray  # (C, C) int64: voxels where both classes' interpolated SDFs are negative


def label_map_on_image(
    grid: torch.Tensor,
    center: np.ndarray,
    scale: float,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    values: list[int],
    background: torch.Tensor | None = None,
) -> ImageLabels:
    """Label map on the source grid (``shape``, ``affine``): ``values[c]`` where class c has the most negative
    interpolated SDF, 0 where every class is positive or the voxel lies outside the normalised cube; and per pair
    of classes the voxels where both are negative (the reconstruction's overlaps, which one label per voxel
    hides). With ``background`` (R, R, R; eval.partition's) a voxel is background where its interpolation is below
    every class's instead, and nothing overlaps. Runs on the grid's device."""
    dtype = np.uint8 if max(values, default=0) < 256 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    n_classes = grid.shape[0]
    overlaps = torch.zeros(n_classes, n_classes, dtype=torch.float64, device=grid.device)
    box = _cube_voxel_box(np.asarray(center, dtype=np.float64), float(scale), affine, shape)
    if not all(len(r) for r in box):
        return ImageLabels(labels, np.zeros((n_classes, n_classes), dtype=np.int64))
    device = grid.device
    lut = torch.as_tensor(np.asarray(values, dtype=np.int32), device=device)
    # grid_sample reads (N, C, D, H, W) with sample coordinates ordered (W, H, D): our (x, y, z) reversed.
    volume = torch.nan_to_num(grid.float(), nan=float("inf"))[None]
    # Trilinear weights are convex, so interpolating min over classes is <= every class's interpolation: where
    # that one channel is >= 0 (>= the background's, with one) the voxel is background, and only the others need
    # all C channels.
    union = volume.amin(dim=1, keepdim=True)
    if background is not None:
        floor = torch.nan_to_num(background.float(), nan=-1.0)[None, None]
        union = torch.nan_to_num(union, posinf=1.0) - floor
        volume = torch.cat([volume, floor], dim=1)
    # Voxel (i, j, k) → normalised coordinates: one affine map, applied axis by axis by broadcasting.
    to_norm = torch.as_tensor(affine[:3, :3] / scale, dtype=torch.float32, device=device).T  # rows: i, j, k
    offset = torch.as_tensor((affine[:3, 3] - center) / scale, dtype=torch.float32, device=device)
    i_range, j_range, k_range = box
    along_j = torch.arange(j_range.start, j_range.stop, device=device, dtype=torch.float32)[:, None, None] * to_norm[1]
    along_k = torch.arange(k_range.start, k_range.stop, device=device, dtype=torch.float32)[None, :, None] * to_norm[2]
    plane = (along_j + along_k + offset).reshape(-1, 3)  # (J·K, 3)
    slab = max(1, VOXELS_PER_BATCH // len(plane))
    for i0 in range(i_range.start, i_range.stop, slab):
        i = torch.arange(i0, min(i0 + slab, i_range.stop), device=device, dtype=torch.float32)
        norm = (i[:, None, None] * to_norm[0] + plane[None]).reshape(-1, 3)
        coords = norm.flip(-1)
        maybe = (_sample(union, coords)[0] < 0) & (norm.abs() <= 1.0).all(dim=1)
        block = torch.zeros(len(norm), dtype=torch.int32, device=device)
        if maybe.any():
            sdf = _sample(volume, coords[maybe])
            best, chosen = sdf.min(dim=0)
            if background is None:
                block[maybe] = torch.where(best < 0, lut[chosen], 0)
                inside = (sdf < 0).float()  # counts below 2^24 per batch: exact in float32
                overlaps += (inside @ inside.T).double()
            else:
                block[maybe] = torch.where(chosen < n_classes, lut[chosen.clamp(max=n_classes - 1)], 0)
        labels[i0 : i0 + len(i), j_range.start : j_range.stop, k_range.start : k_range.stop] = (
            block.cpu().numpy().astype(dtype).reshape(len(i), len(j_range), len(k_range))
        )
    return ImageLabels(labels, overlaps.cpu().numpy().round().astype(np.int64))


def _sample(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(C, N) trilinear interpolation of ``volume`` (1, C, R, R, R) at grid_sample coordinates (N, 3)."""
    return F.grid_sample(volume, coords.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border",
                         align_corners=True)[0, :, 0, 0]  # fmt: skip
