"""Exact signed distance: against brute force, analytic shapes, libigl's independent AABB tree and the exact
winding number, on real phantom meshes with oblique anisotropic affines."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from vecset.data.draws import case_rng
from vecset.data.mesh import mesh_classes
from vecset.data.mesh_distance import MeshDistance, z_order
from vecset.data.phantom import make_phantom
from vecset.data.samples import normalisation, sample_surface
from vecset.data.sdf import reference_signed_distance, signed_distance, signed_distances_to_meshes

from conftest import DEFAULT_LABELS


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


def test_z_order_is_a_permutation_that_keeps_neighbours_together():
    points = np.random.default_rng(3).uniform(-50.0, 80.0, size=(5000, 3))
    order = z_order(points)
    assert np.array_equal(np.sort(order), np.arange(len(points)))

    def path_length(p: np.ndarray) -> float:
        return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())

    assert path_length(points[order]) < 0.2 * path_length(points)
    assert np.array_equal(np.sort(z_order(np.ones((4, 3)))), np.arange(4))
    assert len(z_order(np.zeros((0, 3)))) == 0


def _case_points(meshes, rng, n_volume, n_near):
    """Volume and near-surface points in world mm, drawn as make_samples draws them (noise 0.5 % and 5 %)."""
    center, scale = normalisation(meshes, 0.9)
    near, _, _ = sample_surface(meshes, n_near, rng)
    near = near + rng.normal(0.0, 1.0, near.shape) * np.where(np.arange(n_near) % 2, 0.05, 0.005)[:, None] * scale
    return np.concatenate([rng.uniform(-1.0, 1.0, (n_volume, 3)) * scale + center, near])


@pytest.fixture(scope="module", params=[0, 1])
def phantom_case(request):
    """A demo-size ten-structure phantom (oblique, anisotropic affine: a new pose per seed) and its query points."""
    volume, affine = make_phantom(request.param, DEFAULT_LABELS, "demo")
    meshes, _ = mesh_classes(volume, affine, len(DEFAULT_LABELS))
    points = _case_points(meshes, case_rng(0, f"case{request.param}"), 3000, 3000)
    return meshes, points


def test_phantom_distances_equal_libigl_and_signs_equal_the_winding_number(phantom_case):
    """Every structure: distance within 1e-9 mm of libigl's AABB tree, sign equal to the exact winding number's
    at every point off the surface."""
    meshes, points = phantom_case
    sdf = signed_distances_to_meshes(points, [(m.vertices, m.faces) for m in meshes])
    for c, mesh in enumerate(meshes):
        winding = reference_signed_distance(points, mesh.vertices, mesh.faces, sign="winding_number")
        np.testing.assert_allclose(np.abs(sdf[:, c]), np.abs(winding), rtol=0, atol=1e-9)
        off = np.abs(winding) > 1e-9
        assert off.mean() > 0.99
        assert np.array_equal(sdf[off, c] < 0, winding[off] < 0), f"structure {c}: sign differs"


def test_threads_share_the_queries_without_changing_a_bit(phantom_case):
    meshes, points = phantom_case
    pairs = [(m.vertices, m.faces) for m in meshes[:4]]
    one = signed_distances_to_meshes(points, pairs, threads=1)
    np.testing.assert_array_equal(signed_distances_to_meshes(points, pairs, threads=2), one)
    np.testing.assert_array_equal(signed_distances_to_meshes(points, pairs, threads=3), one)


def test_points_on_the_surface_are_at_distance_zero():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=7.0)
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    on = np.concatenate([mesh.vertices, (a + b) / 2, (a + b + c) / 3])
    assert np.abs(signed_distance(on, mesh.vertices, mesh.faces)).max() < 1e-12


def test_far_from_the_origin_and_degenerate_trees_stay_exact():
    """Millimetre coordinates offset by 10 m, a one-face mesh, and faces whose centroids coincide (the tree then
    splits by count): distances still equal brute force."""
    rng = np.random.default_rng(5)
    sphere = trimesh.creation.icosphere(subdivisions=1, radius=10.0)
    offset = np.array([1e4, -2e4, 5e3])
    points = rng.uniform(-30, 30, (200, 3))
    np.testing.assert_allclose(
        np.abs(signed_distance(points + offset, sphere.vertices + offset, sphere.faces)),
        _brute_unsigned(points, sphere.vertices, sphere.faces),
        atol=1e-9,
    )
    one = (np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))
    np.testing.assert_allclose(
        np.abs(MeshDistance(*one).signed_distance(points)), _brute_unsigned(points, *one), atol=1e-12
    )
    # one triangle turned 40 times about its own centroid: every face has the same centroid
    turns = [trimesh.transformations.rotation_matrix(t, [0.3, 1, 0.2])[:3, :3] for t in np.linspace(0, 3, 40)]
    triangle = one[0] - one[0].mean(axis=0)
    vertices = np.concatenate([triangle @ r.T for r in turns])
    faces = np.arange(len(vertices)).reshape(-1, 3)
    np.testing.assert_allclose(
        np.abs(MeshDistance(vertices, faces).signed_distance(points[:50])),
        _brute_unsigned(points[:50], vertices, faces),
        atol=1e-12,
    )
