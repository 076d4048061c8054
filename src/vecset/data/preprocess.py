"""File-level per-case steps called by the workflow scripts: one case per call, outputs written atomically.

``mesh_case``: label NIfTI → one PLY per structure + a QC/geometry JSON.
``sample_case``: those meshes + JSON → the sample npz (vecset.data.contract).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vecset.atomic import write_bytes_atomic
from vecset.data.label_image import map_labels, read_label_image
from vecset.data.mesh import Mesh, mesh_classes
from vecset.data.ply import read_ply, write_ply
from vecset.data.samples import case_rng, make_samples, save_samples
from vecset.data.sdf import set_sdf_threads
from vecset.errors import CaseInputError
from vecset.settings import SampleSettings

log = logging.getLogger(__name__)
QC_VERSION = 1


def mesh_case(
    nifti: str | Path,
    case_id: str,
    label_map: dict[str, int],
    mesh_paths: dict[str, str | Path],
    qc_path: str | Path,
    ignore_unknown: bool = False,
    padding: int = 2,
) -> dict:
    """Validate one label map, mesh every structure in world mm and write the PLYs and the QC JSON.

    Returns the QC record. Absent structures get an empty PLY and ``present: false``.
    """
    if list(mesh_paths) != list(label_map):
        raise ValueError(f"mesh_paths keys {list(mesh_paths)} must match the label map {list(label_map)}")
    image = read_label_image(nifti, case_id)
    classes = map_labels(image, label_map, case_id, ignore_unknown=ignore_unknown)
    meshes, records = mesh_classes(classes, image.affine, len(label_map), padding=padding)
    structures = {}
    for (name, path), mesh, qc in zip(mesh_paths.items(), meshes, records, strict=True):
        write_ply(path, mesh.vertices, mesh.faces, comments=[f"case {case_id}", f"structure {name}"])
        structures[name] = {"label": label_map[name], "mesh": Path(path).name, **asdict(qc)}
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
    write_bytes_atomic(qc_path, (json.dumps(record, indent=1) + "\n").encode())
    log.info("%s: meshed %d/%d structures", case_id, len(label_map) - len(absent), len(label_map))
    return record


def load_case_meshes(qc_path: str | Path, mesh_paths: list[str | Path]) -> tuple[dict, list[Mesh]]:
    """The QC record and the per-structure meshes in class order (empty meshes for absent structures)."""
    record = json.loads(Path(qc_path).read_text())
    if len(mesh_paths) != len(record["class_names"]):
        raise ValueError(f"{len(mesh_paths)} mesh files for classes {record['class_names']}")
    meshes = [Mesh(*read_ply(p)) for p in mesh_paths]
    return record, meshes


def sample_case(
    qc_path: str | Path,
    mesh_paths: list[str | Path],
    case_id: str,
    out_path: str | Path,
    settings: SampleSettings,
    fit: float,
    seed: int,
    threads: int = 1,
) -> None:
    """Sample one case's meshes into the npz contract, with exact per-structure SDF, and write it atomically;
    ``fit`` places the heart in the normalised cube, ``seed`` and the case id seed the draws."""
    set_sdf_threads(threads)
    record, meshes = load_case_meshes(qc_path, mesh_paths)
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
