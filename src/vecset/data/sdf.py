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

from vecset.settings import SIGN_METHODS

# The sign methods (vecset.settings.SignMethod): libigl's "fast_winding_number" mode is left out on purpose, its
# distances are not exact (off by up to ~1e-3 relative in tests/test_sdf.py), only its sign is robust.


def set_sdf_threads(threads: int) -> None:
    """Set libigl's worker count; takes effect only before the first parallel libigl call in a process."""
    os.environ["IGL_NUM_THREADS"] = str(max(1, int(threads)))


def spatial_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Permutation that sorts ``points`` (N, 3) along a Z-order (Morton) curve over their bounding box."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    lo = points.min(axis=0)
    extent = np.maximum(points.max(axis=0) - lo, np.finfo(np.float64).tiny)
    cells = ((points - lo) / extent * (2**bits - 1)).astype(np.uint64)
    code = np.zeros(len(points), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(3):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return np.argsort(code, kind="stable")


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
    points = np.asarray(points, dtype=np.float64)
    # Queries in Z-order walk the same AABB branches one after another: 1.7x faster on a real-size case
    # (bench/preprocess.py), with identical results.
    order = spatial_order(points)
    distances = igl.signed_distance(
        np.ascontiguousarray(points[order]),
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
        sign_type=sign_type,
    )[0]
    result = np.empty(len(points), dtype=np.float64)
    result[order] = distances
    return result
