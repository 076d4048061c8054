"""Reconstruct one case and score it: meshes (PLY, world mm), a label map NIfTI on the case's source grid,
and per-structure metrics against the input label map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vecset.data.label_image import map_labels, read_label_image, write_label_image
from vecset.data.mesh import mesh_classes
from vecset.data.samples import sample_surface
from vecset.eval.metrics import chamfer, structure_metrics
from vecset.eval.reconstruct import SdfFunction, decode_grid, grid_meshes, label_map_on_image, write_meshes

CHAMFER_POINTS = 20_000


def evaluate_case(
    case_id: str,
    sdf: SdfFunction,
    center: np.ndarray,
    scale: float,
    label_path: str | Path,
    label_map: dict[str, int],
    resolution: int,
    out_dir: str | Path,
) -> list[dict]:
    """Decode ``sdf`` on a grid, write ``out_dir``/{structure}.ply and ``out_dir``/labels.nii.gz (the input's
    affine and shape, raw label values), and return one metrics row per structure. ``center`` and ``scale``
    are the case's normalisation (x_mm = x_norm * scale + center)."""
    out_dir = Path(out_dir)
    names = list(label_map)
    grid = decode_grid(sdf, resolution, desc=f"decode {case_id}")
    meshes = grid_meshes(grid, center, scale)
    write_meshes(out_dir, case_id, names, meshes)
    image = read_label_image(label_path, case_id)
    truth = map_labels(image, label_map, case_id, ignore_unknown=True)
    labels = label_map_on_image(grid, center, scale, image.affine, image.shape, list(label_map.values()))
    write_label_image(out_dir / "labels.nii.gz", labels, image.affine)
    truth_meshes, _ = mesh_classes(truth, image.affine, len(names))
    spacing = tuple(float(v) for v in image.voxel_sizes)
    rng = np.random.default_rng(0)  # the same Chamfer sample points on every run
    rows = []
    for c, name in enumerate(names):
        row: dict[str, Any] = {"case": case_id, "structure": name}
        row |= structure_metrics(labels == label_map[name], truth == c + 1, spacing)
        row["chamfer_mm"] = np.nan
        if meshes[c].n_faces and truth_meshes[c].n_faces:
            a, _, _ = sample_surface([meshes[c]], CHAMFER_POINTS, rng)
            b, _, _ = sample_surface([truth_meshes[c]], CHAMFER_POINTS, rng)
            row["chamfer_mm"] = chamfer(a, b)
        rows.append(row)
    return rows
