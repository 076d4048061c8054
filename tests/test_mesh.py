"""Marching-cubes meshes: world millimetres through the affine, outward faces, closed surfaces."""

from __future__ import annotations

import numpy as np
import pytest

from vecset.data.mesh import is_closed, mesh_classes, signed_volume
from vecset.data.ply import read_ply, write_ply
from vecset.geometry import random_rotation, voxel_to_world, world_to_voxel

from conftest import DEFAULT_LABELS, ply_comments


def _oblique_affine(spacing=(0.7, 0.9, 1.6), flip=True, seed=1) -> np.ndarray:
    rot = random_rotation(np.random.default_rng(seed), 30.0)
    direction = rot @ (np.diag([-1.0, -1.0, 1.0]) if flip else np.eye(3))
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing)
    affine[:3, 3] = [12.0, -40.0, 7.5]
    return affine


def _ball(shape=(48, 44, 30), affine=None, radius_mm=12.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ball of ``radius_mm`` around the world point at the image centre: (class volume, affine, centre mm)."""
    affine = _oblique_affine() if affine is None else affine
    ijk = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), -1).reshape(-1, 3)
    centre = voxel_to_world((np.asarray(shape) - 1) / 2.0, affine)
    inside = np.linalg.norm(voxel_to_world(ijk, affine) - centre, axis=1) <= radius_mm
    return inside.reshape(shape).astype(np.uint8), affine, centre


@pytest.mark.parametrize("flip", [True, False])
def test_ball_mesh_is_closed_outward_and_in_world_mm(flip):
    volume, affine, centre = _ball(affine=_oblique_affine(flip=flip))
    (mesh,), (qc,) = mesh_classes(volume, affine, 1, padding=2)
    assert qc.present and qc.closed and is_closed(mesh.faces)
    assert qc.components == 1
    # Outward faces: positive enclosed volume, close to the analytic ball (voxelisation error only).
    expected = 4 / 3 * np.pi * 12.0**3
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(expected, rel=0.06)
    assert qc.volume_mm3 == pytest.approx(expected, rel=0.06)
    radii = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert np.abs(radii - 12.0).max() < 1.6  # within one (largest) voxel of the true sphere, in mm
    # Face normals point away from the centre.
    a, b, c = (mesh.vertices[mesh.faces[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    assert np.mean(np.einsum("ij,ij->i", normals, (a + b + c) / 3 - centre) > 0) > 0.999


def test_structure_touching_the_border_is_closed():
    volume = np.zeros((20, 20, 20), dtype=np.uint8)
    volume[:8, 5:15, 5:15] = 1  # cut by the image edge, like a vessel leaving the field of view
    (mesh,), (qc,) = mesh_classes(volume, np.eye(4), 1)
    assert qc.closed
    assert mesh.vertices[:, 0].min() == pytest.approx(-0.5, abs=0.01)  # closes half a voxel outside


def test_absent_structure_gets_empty_mesh_and_record():
    volume = np.zeros((10, 10, 10), dtype=np.uint8)
    volume[2:5, 2:5, 2:5] = 2
    meshes, records = mesh_classes(volume, np.eye(4), 3)
    assert [r.present for r in records] == [False, True, False]
    assert meshes[0].n_faces == 0 and meshes[1].n_faces > 0
    assert records[1].voxels == 27 and records[1].volume_mm3 == pytest.approx(27.0)


def test_random_blobs_give_closed_manifold_meshes():
    """Diagonal-touching voxels are where marching cubes at exactly 0.5 goes non-manifold."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        volume = (rng.random((14, 14, 14)) > 0.6).astype(np.uint8)
        (mesh,), (qc,) = mesh_classes(volume, np.eye(4), 1)
        assert qc.closed and signed_volume(mesh.vertices, mesh.faces) > 0


def test_components_are_counted():
    volume = np.zeros((20, 10, 10), dtype=np.uint8)
    volume[2:5, 2:5, 2:5] = 1
    volume[10:14, 2:5, 2:5] = 1
    _, (qc,) = mesh_classes(volume, np.eye(4), 1)
    assert qc.components == 2 and qc.closed


def test_phantom_meshes_are_all_closed(phantom):
    volume, affine = phantom
    _, records = mesh_classes(volume, affine, len(DEFAULT_LABELS))
    present = [r for r in records if r.present]
    assert len(present) >= 9
    assert all(r.closed for r in present), [r for r in present if not r.closed]


def test_is_closed_detects_open_and_misoriented_meshes():
    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    assert is_closed(tetra)
    assert not is_closed(tetra[:3])  # a hole
    assert not is_closed(np.concatenate([tetra[:3], tetra[3:, ::-1]]))  # one face flipped


def test_world_voxel_round_trip_oblique():
    affine = _oblique_affine()
    ijk = np.random.default_rng(0).uniform(0, 50, (100, 3))
    np.testing.assert_allclose(world_to_voxel(voxel_to_world(ijk, affine), affine), ijk, atol=1e-9)


def test_ply_round_trip_with_names(tmp_path):
    volume, affine, _ = _ball()
    (mesh,), _ = mesh_classes(volume, affine, 1)
    path = tmp_path / "ball.ply"
    write_ply(path, mesh.vertices, mesh.faces, comments=["case c1", "structure aorta"])
    vertices, faces = read_ply(path)
    np.testing.assert_allclose(vertices, mesh.vertices, atol=1e-4)  # float32 storage of world mm
    np.testing.assert_array_equal(faces, mesh.faces)
    assert ply_comments(path) == ["SPACE=RAS", "case c1", "structure aorta"]
    trimesh = pytest.importorskip("trimesh")
    loaded = trimesh.load(path, process=False)
    assert len(loaded.faces) == len(faces) and loaded.is_watertight


def test_empty_ply_round_trip(tmp_path):
    write_ply(tmp_path / "e.ply", np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    vertices, faces = read_ply(tmp_path / "e.ply")
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
