"""Where two structures share a wall (myocardium / LV, LA / LAA, LA / PV, RV / PA): does the reconstruction overlap
there, or open a gap?

Two structures touch when a voxel of one is a face neighbour of a voxel of the other in the input label map; the
pair's shared wall is the voxels on both sides of those faces. Per touching pair and case:

- overlap: voxels where both structures' reconstructed SDFs are negative (per-structure SDFs can claim the same
  space, which a label map with one label per voxel hides); the input has none by construction;
- gap: voxels of the shared wall that the reconstruction labels background (a wall that opened up).

Both in mm³ and as a fraction of the smaller structure's input volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vecset.geometry import mask_box


@dataclass(frozen=True)
class SharedWalls:
    """The touching pairs of one input label map and their walls."""

    pairs: list[tuple[int, int]]  # class indices (0-based), a < b
    voxels: list[np.ndarray]  # per pair, flat indices (C order) of its wall voxels on both sides
    class_voxels: np.ndarray  # (C,) voxels of each structure in the input


def shared_walls(classes: np.ndarray, n_classes: int) -> SharedWalls:
    """Touching pairs and their walls in a class volume (0 = background, c + 1 = class c), face neighbours only."""
    counts = np.bincount(classes.reshape(-1), minlength=n_classes + 1)[1 : n_classes + 1].astype(np.int64)
    box = mask_box(classes > 0)
    codes, flat = [], []
    if box is not None:
        crop = classes[box]
        origin = np.array([s.start for s in box])
        for axis in range(3):
            lower = [slice(None)] * 3
            upper = [slice(None)] * 3
            lower[axis], upper[axis] = slice(None, -1), slice(1, None)
            a, b = crop[tuple(lower)], crop[tuple(upper)]
            where = np.nonzero((a != b) & (a > 0) & (b > 0))
            first = np.stack(where, axis=1) + origin
            second = first.copy()
            second[:, axis] += 1
            ca, cb = a[where].astype(np.int64), b[where].astype(np.int64)
            code = np.minimum(ca, cb) * (n_classes + 1) + np.maximum(ca, cb)
            for side in (first, second):
                codes.append(code)
                flat.append(np.ravel_multi_index(tuple(side.T), classes.shape))
    pairs, voxels = [], []
    if codes:
        code, index = np.concatenate(codes), np.concatenate(flat)
        order = np.argsort(code, kind="stable")
        code, index = code[order], index[order]
        keys, starts = np.unique(code, return_index=True)
        for key, part in zip(keys, np.split(index, starts[1:]), strict=True):
            pairs.append((int(key // (n_classes + 1)) - 1, int(key % (n_classes + 1)) - 1))
            voxels.append(np.unique(part))
    return SharedWalls(pairs, voxels, counts)


def interface_rows(
    case_id: str,
    names: list[str],
    walls: SharedWalls,
    recon_labels: np.ndarray,
    overlap_voxels: np.ndarray,
    voxel_mm3: float,
) -> list[dict]:
    """One row per touching pair: its wall, the reconstruction's overlap (``overlap_voxels``, (C, C) counts of
    voxels where both SDFs are negative) and gap (wall voxels ``recon_labels`` leaves at 0), in mm³ and as a
    fraction of the smaller structure."""
    rows = []
    flat_labels = recon_labels.reshape(-1)
    for (a, b), wall in zip(walls.pairs, walls.voxels, strict=True):
        smaller = float(min(walls.class_voxels[a], walls.class_voxels[b]))
        overlap = float(overlap_voxels[a, b])
        gap = float(np.count_nonzero(flat_labels[wall] == 0))
        rows.append(
            {
                "case": case_id,
                "structure_a": names[a],
                "structure_b": names[b],
                "wall_mm3": len(wall) * voxel_mm3,
                "overlap_mm3": overlap * voxel_mm3,
                "overlap_fraction": overlap / smaller,
                "gap_mm3": gap * voxel_mm3,
                "gap_fraction": gap / smaller,
            }
        )
    return rows
