"""The ceiling an evaluation setting allows: a case's own exact SDF (its input meshes, vecset.data.mesh_distance)
through the same grid, label map and metrics as a trained model's reconstruction (rule oracle).

A structure the grid cannot resolve scores low here too; a model's score is read against this one. The oracle
depends on the case and the eval settings, never on a run, so it runs once per validation case, beside training.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from vecset.data.mesh import Mesh
from vecset.data.mesh_distance import MeshSetDistance
from vecset.data.preprocess import load_case_meshes
from vecset.data.samples import load_normalisation
from vecset.eval.case import CaseScores, CaseTruth, score_case
from vecset.eval.decode import GridDecoder, SdfFunction, numpy_sdf
from vecset.eval.run import scores_tables, write_csv
from vecset.settings import EvalSettings

# The decoder's points per call: each call queries every structure's index in a few threaded chunks.
ORACLE_CHUNK = 1 << 16


def exact_sdf(meshes: list[Mesh], center: np.ndarray, scale: float, threads: int) -> SdfFunction:
    """The per-class exact signed distance (normalised units) of a case's meshes, NaN for absent structures; the
    structures' indices are built once for every decoder call."""
    present = [c for c, mesh in enumerate(meshes) if mesh.n_faces]
    index = MeshSetDistance([(meshes[c].vertices, meshes[c].faces) for c in present], threads)

    def sdf(points: np.ndarray) -> np.ndarray:
        out = np.full((len(points), len(meshes)), np.nan)
        out[:, present] = index.signed_distances(points * scale + center) / scale
        return out

    return numpy_sdf(sdf)


def oracle_case(
    case_id: str,
    mesh_dir: Path,
    sample_path: Path,
    label_path: Path,
    label_map: dict[str, int],
    settings: EvalSettings,
    metrics_csv: Path,
    interfaces_csv: Path,
    threads: int = 1,
) -> CaseScores:
    """Score one case's exact SDF like a reconstruction (on the CPU, ``threads`` threads) and write its metrics and
    interface tables; the reconstruction itself is not kept."""
    _, meshes = load_case_meshes(mesh_dir)
    truth = CaseTruth.read(case_id, label_path, label_map)
    center, scale = load_normalisation(sample_path, case_id, (truth.affine, truth.shape))
    # An exact SDF's slope is 1: coarse-to-fine then refines only where a surface can pass, and its grid is the one
    # dense decoding gives (vecset.eval.decode).
    decoder = GridDecoder(replace(settings, refine_slope=1.0), chunk=ORACLE_CHUNK)
    sdf = exact_sdf(meshes, center, scale, threads)
    scores = score_case(case_id, sdf, center, scale, truth, label_map, decoder, mesh_dir, settings.tubular, write=False)
    metrics, interfaces = scores_tables(scores)
    write_csv(metrics_csv, metrics)
    write_csv(interfaces_csv, interfaces)
    return scores
