"""Exact signed distance: against brute force point-triangle distance and analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from vecset.data.sdf import signed_distance, spatial_order


def _closest_on_triangle(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point on triangle abc to p, by projecting onto the plane and clamping to edges (brute force)."""
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n)
    q = p - (p - a) @ n * n
    # inside test by barycentric signs
    v0, v1, v2 = b - a, c - a, q - a
    d00, d01, d11, d20, d21 = v0 @ v0, v0 @ v1, v1 @ v1, v2 @ v0, v2 @ v1
    den = d00 * d11 - d01 * d01
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    if v >= 0 and w >= 0 and v + w <= 1:
        return q
    best, best_d = None, np.inf
    for s, e in ((a, b), (b, c), (c, a)):
        t = np.clip((p - s) @ (e - s) / ((e - s) @ (e - s)), 0, 1)
        x = s + t * (e - s)
        if np.linalg.norm(p - x) < best_d:
            best, best_d = x, np.linalg.norm(p - x)
    return best


def _brute_unsigned(points, vertices, faces):
    tris = vertices[faces]
    return np.array([min(np.linalg.norm(p - _closest_on_triangle(p, *t)) for t in tris) for p in points])


@pytest.mark.parametrize("sign", ["pseudonormal", "winding_number"])
def test_distance_is_exact_against_brute_force(sign):
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=10.0)
    mesh.apply_transform(np.diag([1.0, 0.6, 1.8, 1.0]))  # an ellipsoid, faces of many shapes
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.uniform(-25, 25, (150, 3)), mesh.vertices * rng.uniform(0.8, 1.2, (42, 1))])
    sdf = signed_distance(points, mesh.vertices, mesh.faces, sign=sign)
    np.testing.assert_allclose(np.abs(sdf), _brute_unsigned(points, mesh.vertices, mesh.faces), atol=1e-9)
    inside = mesh.contains(points)
    far = np.abs(sdf) > 1e-6
    assert np.array_equal(sdf[far] < 0, inside[far])


def test_sphere_sign_and_distance_match_analytic():
    radius = 20.0
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    normals = np.cross(*(mesh.vertices[mesh.faces[:, k]] - mesh.vertices[mesh.faces[:, 0]] for k in (1, 2)))
    inscribed = np.abs(
        np.einsum("ij,ij->i", normals / np.linalg.norm(normals, axis=1)[:, None], mesh.vertices[mesh.faces[:, 0]])
    ).min()
    sagitta = radius - inscribed  # the polyhedron lies between the inscribed and the circumscribed sphere
    rng = np.random.default_rng(1)
    points = rng.uniform(-35, 35, (20000, 3))
    sdf = signed_distance(points, mesh.vertices, mesh.faces)
    analytic = np.linalg.norm(points, axis=1) - radius
    assert np.abs(sdf - analytic).max() <= sagitta
    clear = np.abs(analytic) > sagitta
    assert np.array_equal(sdf[clear] < 0, analytic[clear] < 0)


def test_empty_mesh_and_bad_sign_are_rejected():
    with pytest.raises(ValueError, match="empty mesh"):
        signed_distance(np.zeros((1, 3)), np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    mesh = trimesh.creation.box()
    for sign in ("normal", "fast_winding_number"):
        with pytest.raises(ValueError, match="sign must be one of"):
            signed_distance(np.zeros((1, 3)), mesh.vertices, mesh.faces, sign=sign)


def test_spatial_order_is_a_permutation_that_keeps_neighbours_together():
    points = np.random.default_rng(3).uniform(-50.0, 80.0, size=(5000, 3))
    order = spatial_order(points)
    assert np.array_equal(np.sort(order), np.arange(len(points)))

    def path_length(p: np.ndarray) -> float:
        return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())

    assert path_length(points[order]) < 0.2 * path_length(points)
    assert np.array_equal(np.sort(spatial_order(np.ones((4, 3)))), np.arange(4))
    assert len(spatial_order(np.zeros((0, 3)))) == 0
