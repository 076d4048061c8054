"""The sample contract: exact per-structure SDF, area-weighted surface points, stored transforms that map back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from vecset.data.contract import CONTRACT_KEYS, FORMAT_VERSION
from vecset.data.draws import case_rng
from vecset.data.mesh import Mesh, mesh_classes
from vecset.data.samples import (
    face_areas_normals,
    load_normalisation,
    load_samples,
    make_samples,
    sample_surface,
    save_samples,
)
from vecset.geometry import world_to_voxel
from vecset.model.items import SampleFileError, read_case
from vecset.settings import SampleSettings

from conftest import DEFAULT_LABELS

SETTINGS = SampleSettings(n_surface=6000, n_volume=6000, n_near=4000, near_noise=(0.005, 0.05))
FIT = 0.9
C1 = {"case_id": "c1", "source": "phantom"}


@pytest.fixture(scope="module")
def case(phantom):
    volume, affine = phantom
    meshes, _ = mesh_classes(volume, affine, len(DEFAULT_LABELS))
    arrays = make_samples(meshes, list(DEFAULT_LABELS), affine, volume.shape, SETTINGS, FIT, case_rng(3, "c1"), **C1)
    return volume, affine, meshes, arrays


def test_contract_keys_shapes_and_dtypes(case):
    volume, affine, _meshes, a = case
    n_classes = len(DEFAULT_LABELS)
    assert set(a) == set(CONTRACT_KEYS)
    assert a["surface_points"].shape == (6000, 3) and a["surface_points"].dtype == np.float32
    assert a["surface_normals"].shape == (6000, 3)
    assert a["surface_labels"].dtype == np.uint8 and a["surface_labels"].max() < n_classes
    assert a["vol_points"].shape == (6000, 3) and a["vol_sdf"].shape == (6000, n_classes)
    assert a["near_points"].shape == (4000, 3) and a["near_sdf"].shape == (4000, n_classes)
    assert a["present"].dtype == bool and a["present"].shape == (n_classes,)
    assert a["center"].shape == (3,) and a["center"].dtype == np.float64 and a["scale"].shape == ()
    np.testing.assert_array_equal(a["shape"], volume.shape)
    np.testing.assert_allclose(a["affine"], affine)
    assert list(a["class_names"]) == list(DEFAULT_LABELS)
    assert int(a["format_version"]) == FORMAT_VERSION
    np.testing.assert_allclose(np.linalg.norm(a["surface_normals"], axis=1), 1.0, atol=1e-5)
    assert np.abs(a["vol_points"]).max() <= 1.0
    assert np.abs(a["surface_points"]).max() <= FIT + 1e-6


def test_sdf_is_exact_in_millimetres_per_structure(case):
    _, _, meshes, a = case
    from vecset.data.sdf import reference_signed_distance

    pts_mm = a["vol_points"][:200].astype(np.float64) * a["scale"] + a["center"]
    for c, mesh in enumerate(meshes):
        if mesh.n_faces:
            ref = reference_signed_distance(pts_mm, mesh.vertices, mesh.faces) / a["scale"]
            np.testing.assert_allclose(a["vol_sdf"][:200, c], ref, atol=1e-6)


def test_surface_points_lie_on_their_structure(case):
    _, _, _, a = case
    _, _, meshes, _ = case
    from vecset.data.sdf import reference_signed_distance

    for c in np.unique(a["surface_labels"])[:4]:
        pts = a["surface_points"][a["surface_labels"] == c][:100].astype(np.float64) * a["scale"] + a["center"]
        d = reference_signed_distance(pts, meshes[c].vertices, meshes[c].faces)
        assert np.abs(d).max() < 1e-3  # mm (float32 storage)


def test_points_inside_a_structure_map_back_to_a_voxel_of_its_label(case):
    """world ↔ normalised ↔ voxel round trip through the oblique, anisotropic affine of the phantom."""
    volume, affine, _, a = case
    voxel = np.linalg.norm(affine[:3, :3], axis=0).max()  # mm
    points = np.concatenate([a["vol_points"], a["near_points"]])
    sdf = np.concatenate([a["vol_sdf"], a["near_sdf"]])
    checked = 0
    for c in np.flatnonzero(a["present"]):
        deep = sdf[:, c] * a["scale"] < -voxel  # more than one voxel inside structure c
        world = points[deep].astype(np.float64) * a["scale"] + a["center"]
        ijk = np.rint(world_to_voxel(world, affine)).astype(int)
        assert (volume[tuple(ijk.T)] == c + 1).all(), f"class {c}"
        checked += deep.sum()
    assert checked > 500


def test_signs_negative_inside_positive_outside(case):
    volume, affine, _, a = case
    # volume points on background voxels far from everything are outside every structure
    world = a["vol_points"].astype(np.float64) * a["scale"] + a["center"]
    ijk = np.rint(world_to_voxel(world, affine)).astype(int)
    in_image = np.all((ijk >= 0) & (ijk < volume.shape), axis=1)
    labels = np.zeros(len(ijk), dtype=int)
    labels[in_image] = volume[tuple(ijk[in_image].T)]
    voxel = np.linalg.norm(affine[:3, :3], axis=0).max() / a["scale"]
    inside_label = labels > 0
    # a voxel labelled c whose centre is clearly inside: sdf_c < 0 agrees with the label (allowing MC half-voxel)
    for c in np.flatnonzero(a["present"]):
        lab = labels == c + 1
        clear = np.abs(a["vol_sdf"][:, c]) > voxel
        assert np.all(a["vol_sdf"][lab & clear, c] < 0)
        assert np.all(a["vol_sdf"][~lab & in_image & clear, c] > 0)
    assert inside_label.sum() > 50


def test_surface_sampling_is_area_weighted_per_structure():
    big = _cube(2.0, offset=0.0)
    small = _cube(1.0, offset=5.0)
    _, _, labels = sample_surface([big, Mesh.empty(), small], 40000, np.random.default_rng(0))
    share = np.bincount(labels, minlength=3) / 40000
    assert share[1] == 0
    assert share[0] == pytest.approx(0.8, abs=0.01)  # areas 24 : 6
    assert share[2] == pytest.approx(0.2, abs=0.01)


def test_area_weighting_within_a_mesh():
    mesh = _cube(1.0, offset=0.0)
    stretched = Mesh(mesh.vertices * [3.0, 1.0, 1.0], mesh.faces)  # faces ⟂ x keep area 1, others grow to 3
    _points, normals, _ = sample_surface([stretched], 70000, np.random.default_rng(1))
    on_x_faces = np.abs(normals[:, 0]) > 0.9
    assert on_x_faces.mean() == pytest.approx(2 / 14, abs=0.01)
    areas, _ = face_areas_normals(stretched)
    assert areas.sum() == pytest.approx(14.0)


def test_absent_structures_are_masked_with_nan(phantom):
    volume, affine = phantom
    labels = dict(DEFAULT_LABELS)
    meshes, _ = mesh_classes(volume, affine, len(labels))
    meshes[8] = Mesh.empty()
    a = make_samples(meshes, list(labels), affine, volume.shape, SETTINGS, FIT, case_rng(0, "x"), **C1)
    assert not a["present"][8] and a["present"].sum() == 9
    assert np.isnan(a["vol_sdf"][:, 8]).all() and np.isfinite(np.delete(a["vol_sdf"], 8, axis=1)).all()
    assert 8 not in a["surface_labels"]


def test_same_seed_and_case_give_same_samples_other_case_differs(phantom):
    volume, affine = phantom
    meshes, _ = mesh_classes(volume, affine, len(DEFAULT_LABELS))
    small = SampleSettings(n_surface=100, n_volume=100, n_near=100)
    run = lambda cid: make_samples(  # noqa: E731
        meshes, list(DEFAULT_LABELS), affine, volume.shape, small, FIT, case_rng(0, cid), case_id=cid, source="p"
    )
    a, b, other = run("c1"), run("c1"), run("c2")
    np.testing.assert_array_equal(a["vol_points"], b["vol_points"])
    assert not np.array_equal(a["vol_points"], other["vol_points"])


def test_save_is_atomic_and_load_checks_the_contract(tmp_path, case):
    *_, a = case
    path = tmp_path / "s.npz"
    save_samples(path, a)
    loaded = load_samples(path)
    np.testing.assert_array_equal(loaded["vol_sdf"], a["vol_sdf"])
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    with pytest.raises(ValueError, match="lack contract keys"):
        save_samples(tmp_path / "bad.npz", {k: v for k, v in a.items() if k != "present"})
    assert not (tmp_path / "bad.npz").exists()
    old = dict(a, format_version=np.int64(FORMAT_VERSION + 1))
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(ValueError, match="format_version"):
        load_samples(tmp_path / "old.npz")


def _cube(size: float, offset: float) -> Mesh:
    import trimesh

    box = trimesh.creation.box(extents=[size] * 3)
    return Mesh(np.asarray(box.vertices) + offset, np.asarray(box.faces, dtype=np.int64))


def test_one_call_from_a_label_map_to_a_sample_file_equals_the_mesh_and_sample_rules(phantom, tmp_path):
    """preprocess_case (what benchmarks call) makes the same sample file as the mesh rule's and the sample rule's
    functions under the same config, and keeps no case folder unless asked to."""
    from vecset.config import validate_config
    from vecset.data.preprocess import mesh_case, preprocess_case, sample_case
    from vecset.settings import Config, build

    from conftest import write_nifti

    config = build(
        Config, validate_config({"seed": 5, "samples": {"n_surface": 3000, "n_volume": 2000, "n_near": 2000}})
    )
    labels = write_nifti(tmp_path / "c7.nii.gz", *phantom)
    mesh_case(labels, "c7", dict(config.labels), tmp_path / "meshes", padding=config.mesh.padding)
    sample_case(tmp_path / "meshes", "c7", tmp_path / "rules.npz", config.samples, config.normalisation.fit, 5)
    one = preprocess_case(labels, "c7", tmp_path / "one" / "c7.npz", config)
    rules, made = load_samples(tmp_path / "rules.npz"), load_samples(one)
    assert set(made) == set(rules)
    for key, value in rules.items():  # class names are strings: NaN-aware comparison for the numbers only
        assert np.array_equal(made[key], value, equal_nan=value.dtype.kind == "f"), key
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["c7.npz"]


def test_a_sample_file_copied_over_another_cases_is_refused_wherever_it_is_read(sample_dir, tmp_path):
    """Sample files record their case and source image: one case's file under another's name is refused by
    training's reader, by encode's and evaluate's normalisation, and against another label image's grid."""
    own = sample_dir / "samples" / "case_0.npz"
    copied = tmp_path / "case_1.npz"
    shutil.copy(own, copied)
    with pytest.raises(SampleFileError, match=r"case_1\.npz: holds case 'case_0' \(from phantom\), not 'case_1'"):
        read_case(copied, len(DEFAULT_LABELS), "case_1")
    with pytest.raises(ValueError, match=r"holds case 'case_0'.*delete it and rerun the workflow"):
        load_normalisation(copied, "case_1")
    arrays = load_samples(own)
    center, scale = load_normalisation(own, "case_0", (arrays["affine"], arrays["shape"].tolist()))
    assert scale == float(arrays["scale"]) and np.array_equal(center, arrays["center"])
    moved = arrays["affine"].copy()
    moved[0, 3] += 5.0
    with pytest.raises(ValueError, match="on another grid than its case's label image"):
        load_normalisation(own, "case_0", (moved, arrays["shape"].tolist()))
