"""Per-structure surface meshes in world millimetres from a class-index volume.

Each structure is meshed by marching cubes at level ≈0.5 (MC_LEVEL) on its bounding-box crop, zero-padded so the
surface closes even where the structure touches the image border. Vertices go through the full NIfTI
affine (spacing, orientation, obliqueness). Faces are oriented outward: skimage's faces point inward on a
0/1 mask and an affine with negative determinant flips them again, so orientation is decided by the
sign of the enclosed volume rather than assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import marching_cubes

from vecset.geometry import row_cross, voxel_to_world

# Just below 0.5: on a binary mask the trilinear saddle of an ambiguous cube face is exactly 0.5, and at
# level 0.5 marching cubes pinches surfaces together there (non-manifold edges; half of random blobs in
# tests/test_mesh.py). Slightly below, diagonal voxels join (26-connectivity, as counted in the QC) and
# every surface is a closed 2-manifold; the surface moves outward by 0.001 voxel.
MC_LEVEL = 0.5 - 1e-3


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: ``vertices`` (V, 3) float64 world mm, ``faces`` (F, 3) int64, outward-oriented."""

    vertices: np.ndarray
    faces: np.ndarray

    @classmethod
    def empty(cls) -> Mesh:
        return cls(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))

    @property
    def n_faces(self) -> int:
        return len(self.faces)


@dataclass(frozen=True)
class StructureQC:
    """Quality record of one structure in one case."""

    present: bool
    voxels: int
    volume_mm3: float
    mesh_volume_mm3: float
    components: int
    vertices: int
    triangles: int
    closed: bool


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume by the divergence theorem: positive for a closed mesh with outward faces."""
    if len(faces) == 0:
        return 0.0
    # np.take and row_cross: 2.5x faster than fancy indexing and np.cross on 1.4 M faces
    a, b, c = (np.take(vertices, faces[:, k], axis=0) for k in range(3))
    return float(np.einsum("ij,ij->", a, row_cross(b, c)) / 6.0)


def is_closed(faces: np.ndarray) -> bool:
    """True when every edge is shared by exactly two faces that traverse it in opposite directions:
    closed, consistently oriented, no non-manifold edges. One sort of the 3F directed edges.
    """
    if len(faces) == 0:
        return False
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    n = np.int64(faces.max()) + 1
    # undirected edge key, times 2, plus the direction bit: a closed oriented mesh has each key exactly
    # twice after sorting, once with each bit.
    keys = (np.minimum(a, b) * n + np.maximum(a, b)) * 2 + (a < b)
    if len(keys) % 2:
        return False
    keys.sort()
    first, second = keys[0::2], keys[1::2]
    return bool(np.all(first % 2 == 0) and np.all(second == first + 1) and np.all(np.diff(first) > 0))


def mesh_structure(mask: np.ndarray, affine: np.ndarray, offset: np.ndarray) -> tuple[Mesh, float]:
    """Marching cubes on a boolean crop whose voxel (0,0,0) sits at index ``offset`` of the image.

    Returns the outward-oriented mesh and its enclosed volume (mm³). The crop must already carry at least
    one voxel of zero padding on each side.
    """
    verts, faces, _, _ = marching_cubes(mask.astype(np.float32), level=MC_LEVEL)
    vertices = voxel_to_world(verts.astype(np.float64) + offset, affine)
    faces = faces.astype(np.int64)
    volume = signed_volume(vertices, faces)
    if volume < 0:
        faces = faces[:, ::-1].copy()
    return Mesh(vertices, faces), abs(volume)


def mesh_classes(
    classes: np.ndarray, affine: np.ndarray, n_classes: int, padding: int = 2
) -> tuple[list[Mesh], list[StructureQC]]:
    """Mesh every class 1..n_classes of a class-index volume (0 = background); absent classes get empty meshes."""
    if padding < 1:
        raise ValueError(f"padding must be >= 1 voxel so surfaces close, got {padding}")
    voxel_volume = abs(float(np.linalg.det(affine[:3, :3])))
    boxes = ndimage.find_objects(classes, max_label=n_classes)
    meshes: list[Mesh] = []
    records: list[StructureQC] = []
    for c in range(1, n_classes + 1):
        box = boxes[c - 1]
        if box is None:
            meshes.append(Mesh.empty())
            records.append(StructureQC(False, 0, 0.0, 0.0, 0, 0, 0, False))
            continue
        crop = np.pad(classes[box] == c, padding)
        voxels = int(np.count_nonzero(crop))
        offset = np.array([s.start - padding for s in box], dtype=np.float64)
        mesh, mesh_volume = mesh_structure(crop, affine, offset)
        _, n_components = ndimage.label(crop, structure=np.ones((3, 3, 3), dtype=bool))
        meshes.append(mesh)
        records.append(
            StructureQC(
                present=True,
                voxels=voxels,
                volume_mm3=voxels * voxel_volume,
                mesh_volume_mm3=mesh_volume,
                components=int(n_components),
                vertices=len(mesh.vertices),
                triangles=mesh.n_faces,
                closed=is_closed(mesh.faces),
            )
        )
    return meshes, records
