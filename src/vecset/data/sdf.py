"""Exact signed distance from points to a closed triangle mesh (negative inside), via libigl.

Distance is exact (AABB tree over the triangles, closest point on each candidate triangle). The sign
comes from the angle-weighted pseudonormal at the closest feature, which is exact for closed,
consistently oriented meshes such as per-structure marching-cubes surfaces (bench/preprocess.py checks
it against the exact winding number). Never call this on several structures' meshes concatenated:
touching structures share faces and the sign breaks there; query each structure's mesh on its own.
"""

from __future__ import annotations

import os

import numpy as np

# libigl's "fast_winding_number" mode is left out on purpose: its distances are not exact (off by up to
# ~1e-3 relative in tests/test_sdf.py), only its sign is robust.
SIGN_METHODS = ("pseudonormal", "winding_number")


def set_sdf_threads(threads: int) -> None:
    """Set libigl's worker count; takes effect only before the first parallel libigl call in a process."""
    os.environ["IGL_NUM_THREADS"] = str(max(1, int(threads)))


def signed_distance(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, sign: str = "pseudonormal"
) -> np.ndarray:
    """Signed distance (N,) float64 from ``points`` (N, 3) to the mesh, in the mesh's units; < 0 inside."""
    import igl  # imported late so set_sdf_threads() can run first

    if len(faces) == 0:
        raise ValueError("cannot compute a signed distance to an empty mesh")
    if sign not in SIGN_METHODS:
        raise ValueError(f"sign must be one of {SIGN_METHODS}, got {sign!r}")
    sign_type = getattr(igl, f"SIGNED_DISTANCE_TYPE_{sign.upper()}")
    distances = igl.signed_distance(
        np.ascontiguousarray(points, dtype=np.float64),
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
        sign_type=sign_type,
    )[0]
    return np.asarray(distances, dtype=np.float64)
