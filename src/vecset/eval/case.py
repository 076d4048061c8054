"""Reconstruct one case and score it: meshes (PLY, world mm), a label map NIfTI on the case's source grid,
per-structure metrics against the input label map, and the overlaps and gaps where structures share a wall."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vecset.data.label_image import map_labels, read_label_image, write_label_image
from vecset.data.mesh import Mesh, mesh_classes
from vecset.data.samples import sample_surface
from vecset.eval.colours import write_label_descriptions
from vecset.eval.decode import GridDecoder, SdfFunction
from vecset.eval.interfaces import SharedWalls, interface_rows, shared_walls
from vecset.eval.metrics import chamfer, structure_metrics
from vecset.eval.reconstruct import extraction, grid_meshes, label_map_on_image, write_meshes

CHAMFER_POINTS = 20_000
log = logging.getLogger(__name__)


@dataclass
class CaseScores:
    """One case's rows: ``metrics`` one per structure, ``interfaces`` one per pair of touching structures."""

    metrics: list[dict] = field(default_factory=list)
    interfaces: list[dict] = field(default_factory=list)

    def extend(self, other: CaseScores) -> None:
        self.metrics += other.metrics
        self.interfaces += other.interfaces


@dataclass(frozen=True)
class CaseTruth:
    """What a case's reconstruction is scored against, read once however often the case is scored: its input label
    map's grid (affine, shape, spacing), its classes on that grid, their meshes, and the walls touching structures
    share."""

    affine: np.ndarray
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    classes: np.ndarray  # 0 = background, c + 1 = structure c, C order
    meshes: list[Mesh]
    walls: SharedWalls

    @classmethod
    def read(cls, case_id: str, label_path: str | Path, label_map: dict[str, int]) -> CaseTruth:
        # The mesh rule held this file's claim to mesh.max_voxels before any job downstream of it could run.
        image = read_label_image(label_path, case_id, max_voxels=None)
        # NIfTI voxels load in Fortran order, the label map is written in C order: mixed, every mask operation
        # below strides through memory (0.7 s instead of 0.05 s per structure on a 512×512×256 image).
        classes = np.ascontiguousarray(map_labels(image, label_map, case_id, ignore_unknown=True))
        meshes, _ = mesh_classes(classes, image.affine, len(label_map))
        spacing = tuple(float(v) for v in image.voxel_sizes)
        walls = shared_walls(classes, len(label_map))
        return cls(image.affine, tuple(image.shape), spacing, classes, meshes, walls)  # type: ignore[arg-type]


def evaluate_case(
    case_id: str,
    sdf: SdfFunction,
    center: np.ndarray,
    scale: float,
    label_path: str | Path,
    label_map: dict[str, int],
    decoder: GridDecoder,
    out_dir: str | Path,
    tubular: Collection[str] = (),
) -> CaseScores:
    """Read the case's input label map and :func:`score_case` the reconstruction ``sdf``, writing its files."""
    truth = CaseTruth.read(case_id, label_path, label_map)
    return score_case(case_id, sdf, center, scale, truth, label_map, decoder, out_dir, tubular)


def score_case(
    case_id: str,
    sdf: SdfFunction,
    center: np.ndarray,
    scale: float,
    truth: CaseTruth,
    label_map: dict[str, int],
    decoder: GridDecoder,
    out_dir: str | Path,
    tubular: Collection[str] = (),
    write: bool = True,
) -> CaseScores:
    """Decode ``sdf`` on the case's grid (``decoder``) and return one metrics row per structure against ``truth``
    (centreline Dice for those named in ``tubular``) and one interface row per pair of touching structures. With
    ``write``, the reconstruction's files go to ``out_dir``: {structure}.ply and labels.nii.gz (the input's affine
    and shape, raw label values, with ITK-SNAP's and 3D Slicer's label description files beside it). ``center`` and
    ``scale`` are the case's normalisation (x_mm = x_norm * scale + center)."""
    out_dir = Path(out_dir)
    names = list(label_map)
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    grid = decoder.decode(sdf, scale)
    decode_s = lap()
    fields = extraction(grid.values, decoder.settings)
    meshes = grid_meshes(fields.mesh_fields, center, scale)
    if write:
        write_meshes(out_dir, case_id, names, meshes)
    mesh_s = lap()
    on_image = label_map_on_image(fields.sdf, center, scale, truth.affine, truth.shape, list(label_map.values()),
                                  fields.background)  # fmt: skip
    labels = on_image.labels
    if write:
        write_label_image(out_dir / "labels.nii.gz", labels, truth.affine)
        write_label_descriptions(out_dir, label_map)
    label_s = lap()
    rng = np.random.default_rng(0)  # the same Chamfer sample points on every run
    rows = []
    for c, name in enumerate(names):
        row: dict[str, Any] = {"case": case_id, "structure": name}
        row |= structure_metrics(labels == label_map[name], truth.classes == c + 1, truth.spacing,
                                 tubular=name in tubular)  # fmt: skip
        row["chamfer_mm"] = np.nan
        if meshes[c].n_faces and truth.meshes[c].n_faces:
            a, _, _ = sample_surface([meshes[c]], CHAMFER_POINTS, rng)
            b, _, _ = sample_surface([truth.meshes[c]], CHAMFER_POINTS, rng)
            row["chamfer_mm"] = chamfer(a, b)
        rows.append(row)
    voxel_mm3 = abs(float(np.linalg.det(truth.affine[:3, :3])))
    interfaces = interface_rows(case_id, names, truth.walls, labels, on_image.overlap_voxels, voxel_mm3)
    log.info(
        "%s: %d³ grid (%.1f mm), %.1f%% of its points decoded; decode %.2f s, meshes %.2f s, label map %.2f s, "
        "metrics %.2f s", case_id, grid.resolution, 2 * scale / (grid.resolution - 1), 100 * grid.dense_fraction,
        decode_s, mesh_s, label_s, lap(),
    )  # fmt: skip
    return CaseScores(rows, interfaces)
