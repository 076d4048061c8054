"""Demo phantoms: seeded, all ten structures, realistic geometry, valid NIfTI."""

from __future__ import annotations

import numpy as np

from vecset.data.label_image import map_labels, read_label_image
from vecset.data.phantom import make_phantom, write_phantom

from conftest import DEFAULT_LABELS, small_phantom


def test_same_seed_same_phantom_other_seed_differs():
    a, aff_a = small_phantom(5)
    b, aff_b = small_phantom(5)
    c, aff_c = small_phantom(6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(aff_a, aff_b)
    assert not np.array_equal(a, c) and not np.allclose(aff_a, aff_c)


def test_demo_phantom_has_every_structure_with_plausible_volume():
    volume, affine = make_phantom(0, DEFAULT_LABELS, "demo")
    assert volume.shape == (96, 96, 80)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    counts = np.bincount(volume.ravel(), minlength=11)
    ml = dict(zip(DEFAULT_LABELS, counts[1:] * voxel_ml, strict=True))
    assert all(v > 0 for v in ml.values()), ml
    assert 40 < ml["left_ventricle"] < 250 and 50 < ml["myocardium"] < 250  # adult-sized
    assert ml["coronary_arteries"] < ml["aorta"] / 3


def test_affine_is_oblique_anisotropic_and_not_mirrored_heart():
    _, affine = make_phantom(1, DEFAULT_LABELS, "demo")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    assert spacing[2] > spacing[0] * 1.05  # anisotropic
    direction = affine[:3, :3] / spacing
    assert np.abs(direction - np.round(direction)).max() > 1e-3  # oblique
    assert np.linalg.det(direction) > 0  # LPS-like x/y flip keeps a proper rotation


def test_only_configured_structures_are_painted_with_their_values():
    labels = {"left_ventricle": 500, "myocardium": 205, "made_up": 7}
    volume, _ = small_phantom(0, labels)
    assert set(np.unique(volume)) == {0, 205, 500}
    assert volume.dtype == np.int16


def test_written_phantom_passes_validation(tmp_path):
    path = tmp_path / "p.nii.gz"
    write_phantom(path, 0, DEFAULT_LABELS)
    image = read_label_image(path, "p")
    classes = map_labels(image, DEFAULT_LABELS, "p")
    assert set(np.unique(classes)) == set(range(11))
    assert list(tmp_path.iterdir()) == [path]


def test_label_values_beyond_int16_get_a_voxel_type_that_holds_them(tmp_path):
    """A label map with raw values past 32767 (e.g. 40000) writes demo phantoms that hold those values."""
    labels = {"left_ventricle": 40_000, "myocardium": 205, "aorta": 3_000_000_000}
    volume, _ = small_phantom(0, labels)
    assert set(np.unique(volume)) == {0, 205, 40_000, 3_000_000_000} and volume.dtype == np.int64
    path = tmp_path / "big.nii.gz"
    write_phantom(path, 0, {"left_ventricle": 40_000, "myocardium": 205})
    assert set(np.unique(map_labels(read_label_image(path, "big"), {"lv": 40_000, "myo": 205}, "big"))) == {0, 1, 2}
