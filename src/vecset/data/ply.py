"""Binary PLY meshes with named structures, readable by ParaView, 3D Slicer, MeshLab and trimesh."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vecset.atomic import atomic_path


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray, comments: Sequence[str] = ()) -> None:
    """Write a triangle mesh (float32 xyz, int32 faces) atomically as binary little-endian PLY.

    Coordinates are world millimetres in the NIfTI (RAS) frame; ``SPACE=RAS`` tells 3D Slicer so.
    """
    vertices = np.ascontiguousarray(vertices, dtype="<f4").reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    header = ["ply", "format binary_little_endian 1.0", "comment SPACE=RAS"]
    header += [f"comment {c}" for c in comments]
    header += [
        f"element vertex {len(vertices)}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    face_rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = faces
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("utf-8"))  # comments may carry non-ASCII case ids
        fh.write(vertices.tobytes())
        fh.write(face_rec.tobytes())


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh written by :func:`write_ply`; returns (float64 (V,3), int64 (F,3))."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("utf-8").splitlines()
    if header[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise ValueError(f"{path}: not a binary little-endian PLY written by vecset")
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith("element ")}
    n_vert, n_face = counts["vertex"], counts["face"]
    vertices = np.frombuffer(data, dtype="<f4", count=3 * n_vert, offset=end).reshape(n_vert, 3)
    face_rec = np.frombuffer(data, dtype=[("n", "u1"), ("idx", "<i4", (3,))], count=n_face, offset=end + 12 * n_vert)
    if n_face and not np.all(face_rec["n"] == 3):
        raise ValueError(f"{path}: only triangle meshes are supported")
    return vertices.astype(np.float64), face_rec["idx"].astype(np.int64)
