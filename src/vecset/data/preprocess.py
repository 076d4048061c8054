"""File-level per-case steps called by the workflow scripts: one case per call, outputs written atomically.

``mesh_case``: label NIfTI → one case folder: a PLY per structure (``{structure}.ply``) + ``qc.json``.
``sample_case``: that folder → the sample npz (vecset.data.contract).
``preprocess_case``: both, as the workflow's mesh and sample rules run them with one config: label NIfTI →
sample npz (what benchmarks and tools outside Snakemake call).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vecset.atomic import atomic_directory, write_bytes_atomic
from vecset.data.draws import case_rng
from vecset.data.label_image import MAX_VOXELS, map_labels, read_label_image
from vecset.data.mesh import Mesh, mesh_classes
from vecset.data.ply import read_ply, write_ply
from vecset.data.samples import make_samples, save_samples
from vecset.errors import CaseInputError
from vecset.settings import Config, SampleSettings

log = logging.getLogger(__name__)
QC_VERSION = 1
QC_FILE = "qc.json"  # in each case folder, beside the PLYs


def mesh_file(structure: str) -> str:
    """The name of a structure's PLY in its case folder."""
    return f"{structure}.ply"


def mesh_case(
    nifti: str | Path,
    case_id: str,
    label_map: dict[str, int],
    out_dir: str | Path,
    ignore_unknown: bool = False,
    padding: int = 2,
    max_voxels: int = MAX_VOXELS,
) -> dict:
    """Validate one label map, mesh every structure in world mm and write the case folder ``out_dir`` (a PLY per
    structure and the QC JSON) whole or not at all.

    Returns the QC record. Absent structures get an empty PLY and ``present: false``. A header claiming more
    than ``max_voxels`` is refused before any voxel is read.
    """
    image = read_label_image(nifti, case_id, max_voxels)
    classes = map_labels(image, label_map, case_id, ignore_unknown=ignore_unknown)
    meshes, records = mesh_classes(classes, image.affine, len(label_map), padding=padding)
    structures = {}
    for name, qc in zip(label_map, records, strict=True):
        structures[name] = {"label": label_map[name], "mesh": mesh_file(name), **asdict(qc)}
        if qc.present and not qc.closed:
            log.warning("%s: mesh of %s is not closed; its SDF sign may be wrong", case_id, name)
    absent = [n for n, s in structures.items() if not s["present"]]
    if absent:
        log.warning("%s: structures absent from the label map: %s", case_id, ", ".join(absent))
    record = {
        "qc_version": QC_VERSION,
        "case": case_id,
        "source": str(nifti),
        "shape": list(image.shape),
        "affine": image.affine.tolist(),
        "voxel_sizes_mm": image.voxel_sizes.tolist(),
        "class_names": list(label_map),
        "structures": structures,
    }
    with atomic_directory(out_dir) as folder:
        for name, mesh in zip(label_map, meshes, strict=True):
            comments = [f"case {case_id}", f"structure {name}"]
            write_ply(folder / mesh_file(name), mesh.vertices, mesh.faces, comments=comments)
        write_bytes_atomic(folder / QC_FILE, (json.dumps(record, indent=1) + "\n").encode())
    log.info("%s: meshed %d/%d structures", case_id, len(label_map) - len(absent), len(label_map))
    return record


def load_case_meshes(mesh_dir: str | Path) -> tuple[dict, list[Mesh]]:
    """A case folder's QC record and its per-structure meshes in class order (empty meshes for absent ones)."""
    folder = Path(mesh_dir)
    record = json.loads((folder / QC_FILE).read_text())
    meshes = [Mesh(*read_ply(folder / record["structures"][name]["mesh"])) for name in record["class_names"]]
    return record, meshes


def sample_case(
    mesh_dir: str | Path,
    case_id: str,
    out_path: str | Path,
    settings: SampleSettings,
    fit: float,
    seed: int,
    threads: int = 1,
) -> None:
    """Sample one case's meshes into the npz contract, with exact per-structure SDF, and write it atomically;
    ``fit`` places the heart in the normalised cube, ``seed`` and the case id seed the draws."""
    record, meshes = load_case_meshes(mesh_dir)
    qc_path = Path(mesh_dir) / QC_FILE
    if record.get("case") != case_id:
        raise CaseInputError(
            case_id, qc_path, f"the meshes are case {record.get('case')!r}'s (a folder copied or renamed)",
            "delete the folder and rerun the workflow to rebuild it",
        )  # fmt: skip
    if not any(m.n_faces for m in meshes):
        raise CaseInputError(case_id, qc_path, "no structure has a mesh", "check the label map and 'labels' in config")
    arrays = make_samples(
        meshes,
        record["class_names"],
        np.asarray(record["affine"]),
        tuple(record["shape"]),
        settings,
        fit,
        case_rng(seed, case_id),
        threads,
        case_id=case_id,
        source=str(record["source"]),
    )
    save_samples(out_path, arrays)
    log.info(
        "%s: %d surface, %d volume, %d near points; scale %.3f mm",
        case_id,
        len(arrays["surface_points"]),
        len(arrays["vol_points"]),
        len(arrays["near_points"]),
        float(arrays["scale"]),
    )


def preprocess_case(
    nifti: str | Path,
    case_id: str,
    out_path: str | Path,
    config: Config,
    mesh_dir: str | Path | None = None,
    threads: int = 1,
) -> Path:
    """One label map to its sample file, as the workflow's mesh and sample rules make it under ``config`` (label
    map, mesh padding, sample counts, normalisation, seed): the same arrays as those two rules. The case folder of
    meshes goes to ``mesh_dir``, or to a temporary folder removed afterwards. Returns ``out_path``."""
    with tempfile.TemporaryDirectory(prefix=f"vecset-{case_id}-") as scratch:
        meshes = Path(mesh_dir) if mesh_dir is not None else Path(scratch) / case_id
        mesh_case(nifti, case_id, dict(config.labels), meshes, config.ignore_unknown_labels, config.mesh.padding)
        sample_case(meshes, case_id, out_path, config.samples, config.normalisation.fit, config.seed, threads)
    return Path(out_path)
