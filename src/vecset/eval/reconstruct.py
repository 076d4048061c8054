"""From a per-class SDF function to per-structure meshes in world mm and a label map on the source image grid.

The SDF function takes normalised points (N, 3) and returns (N, C) normalised signed distances (negative
inside); it is the trained model, or the exact SDF of a case's own meshes for the oracle check. It is
sampled once on a regular grid over the normalised cube [-1, 1]^3; meshes come from marching cubes at level 0
on that grid, and the label map from trilinear interpolation of the grid at every voxel centre of the source
image inside the cube (each voxel takes the structure with the most negative SDF; background where all are
positive). ``x_mm = x_norm * scale + center`` and the NIfTI affine carry everything to and from millimetres.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import marching_cubes
from tqdm import tqdm

from vecset.data.mesh import Mesh, signed_volume
from vecset.data.ply import write_ply
from vecset.geometry import voxel_to_world

SdfFunction = Callable[[np.ndarray], np.ndarray]


def grid_axis(resolution: int) -> np.ndarray:
    """The grid's coordinates along each axis of the normalised cube."""
    if resolution < 2:
        raise ValueError(f"grid resolution must be >= 2, got {resolution}")
    return np.linspace(-1.0, 1.0, resolution)


def decode_grid(sdf: SdfFunction, resolution: int, chunk: int = 65536, desc: str | None = None) -> np.ndarray:
    """(R, R, R, C) SDF on the regular grid over [-1, 1]^3 (axes x, y, z), evaluated ``chunk`` points at a time;
    with ``desc``, a progress bar over the grid points on stderr."""
    axis = grid_axis(resolution)
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    parts = []
    with tqdm(total=len(points), desc=desc, unit="pt", unit_scale=True, disable=desc is None, leave=False,
              file=sys.stderr, mininterval=2.0) as bar:  # fmt: skip
        for i in range(0, len(points), chunk):
            parts.append(np.asarray(sdf(points[i : i + chunk])))
            bar.update(len(parts[-1]))
    values = np.concatenate(parts)
    return values.reshape(resolution, resolution, resolution, -1).astype(np.float32)


def grid_meshes(grid: np.ndarray, center: np.ndarray, scale: float) -> list[Mesh]:
    """One closed, outward mesh per class from the SDF grid, in world mm; empty where a class has no inside."""
    resolution = grid.shape[0]
    step = 2.0 / (resolution - 1)
    meshes = []
    for c in range(grid.shape[-1]):
        volume = grid[..., c]
        if not (np.nanmin(volume) < 0 < np.nanmax(volume)):
            meshes.append(Mesh.empty())
            continue
        # Pad with "outside" so surfaces touching the cube's faces still close.
        padded = np.pad(np.nan_to_num(volume, nan=1.0), 1, constant_values=max(float(np.nanmax(volume)), step))
        verts, faces, _, _ = marching_cubes(padded, level=0.0, spacing=(step, step, step))
        verts = verts - step - 1.0  # undo the pad, then grid index 0 → -1
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


def label_map_on_image(
    grid: np.ndarray,
    center: np.ndarray,
    scale: float,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    values: list[int],
    slab: int = 16,
) -> np.ndarray:
    """Label map on the source grid (``shape``, ``affine``): ``values[c]`` where class c has the most negative
    interpolated SDF, 0 where every class is positive or the voxel lies outside the normalised cube."""
    resolution = grid.shape[0]
    dtype = np.uint8 if max(values, default=0) < 256 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    lut = np.asarray(values, dtype=dtype)
    grid = np.nan_to_num(grid, nan=np.inf)
    j, k = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    for i0 in range(0, shape[0], slab):
        i = np.arange(i0, min(i0 + slab, shape[0]))
        ijk = np.stack(np.broadcast_arrays(i[:, None, None], j[None], k[None]), axis=-1).reshape(-1, 3)
        norm = (voxel_to_world(ijk.astype(np.float64), affine) - center) / scale
        inside_cube = np.all(np.abs(norm) <= 1.0, axis=1)
        if not inside_cube.any():
            continue
        coords = ((norm[inside_cube] + 1.0) * 0.5 * (resolution - 1)).T
        sdf = np.stack(
            [ndimage.map_coordinates(grid[..., c], coords, order=1, mode="nearest") for c in range(grid.shape[-1])],
            axis=1,
        )
        best = sdf.argmin(axis=1)
        chosen = np.where(sdf[np.arange(len(best)), best] < 0, lut[best], 0)
        block = np.zeros(len(ijk), dtype=dtype)
        block[inside_cube] = chosen
        labels[i] = block.reshape(len(i), shape[1], shape[2])
    return labels
