"""Reading and validating label maps: each bad input gets one line naming case, file, problem and fix."""

from __future__ import annotations

import gzip
import re
import tracemalloc

import numpy as np
import pytest

from vecset.data.label_image import MESH_MEMORY_FLOOR_MB, map_labels, mesh_memory_mb, read_label_image
from vecset.errors import CaseInputError

from conftest import DEFAULT_LABELS, nifti_bytes, write_nifti

AFFINE = np.diag([0.8, 0.8, 1.5, 1.0])


def _volume() -> np.ndarray:
    data = np.zeros((12, 10, 8), dtype=np.uint8)
    data[2:6, 2:6, 2:5] = 1
    data[6:10, 3:7, 3:6] = 3
    return data


def _expect_error(path, case="case01", match: str = "") -> CaseInputError:
    with pytest.raises(CaseInputError) as info:
        read_label_image(path, case)
    err = info.value
    line = str(err)
    assert "\n" not in line
    assert line.startswith(f"{case}: {path}: ")
    assert "fix: " in line
    assert match in line, line
    return err


def test_reads_valid_file_with_affine(tmp_path):
    path = write_nifti(tmp_path / "ok.nii.gz", _volume(), AFFINE)
    image = read_label_image(path, "ok")
    assert image.shape == (12, 10, 8)
    np.testing.assert_allclose(image.affine, AFFINE)
    np.testing.assert_allclose(image.voxel_sizes, [0.8, 0.8, 1.5])
    np.testing.assert_array_equal(image.labels, _volume())


def huge_claim(path):
    """A gzipped NIfTI-1 header (under 100 bytes on disk) claiming 30000³ voxels (27 T), and no data."""
    header = bytearray(gzip.decompress(nifti_bytes(_volume(), AFFINE))[:352])
    header[42:48] = np.array([30000] * 3, dtype="<i2").tobytes()  # dim[1..3]
    path.write_bytes(gzip.compress(bytes(header)))
    return path


def test_a_header_claiming_too_many_voxels_is_refused_unread_and_raises_no_request(tmp_path):
    path = huge_claim(tmp_path / "claim.nii.gz")
    assert path.stat().st_size < 200
    err = _expect_error(path, match="voxels, more than mesh.max_voxels (1,073,741,824)")
    assert "raise mesh.max_voxels" in str(err)
    assert mesh_memory_mb(path) == MESH_MEMORY_FLOOR_MB, "one bad header must not size every mesh job"
    good = write_nifti(tmp_path / "ok.nii.gz", _volume(), AFFINE)
    assert mesh_memory_mb(good) == MESH_MEMORY_FLOOR_MB and read_label_image(good, "ok", max_voxels=960).shape
    _expect_error_with(good, "voxels, more than mesh.max_voxels (959)", max_voxels=959)


def _expect_error_with(path, match, **kwargs):
    with pytest.raises(CaseInputError, match=re.escape(match)):
        read_label_image(path, "case01", **kwargs)


def test_a_gzip_stream_inflating_past_its_header_is_stopped_there(tmp_path):
    """A small gzip that inflates to far more than the header accounts for is refused while being read, never
    held whole."""
    good = gzip.decompress(nifti_bytes(_volume(), AFFINE))
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(good + bytes(256 << 20), compresslevel=1))
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        _expect_error(path, match="gzip stream inflates past the")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB held for a 256 MiB stream"


def test_a_large_file_that_is_not_nifti_is_named_so_from_its_first_bytes(tmp_path):
    path = tmp_path / "table.nii.gz"
    path.write_bytes(gzip.compress(b"patient,label\n1,2\n" * 200_000))  # 3.6 MB of CSV
    _expect_error(path, match="not a NIfTI-1/NIfTI-2 image")
    plain = tmp_path / "table.nii"
    plain.write_bytes(b"patient,label\n1,2\n" * 200_000)
    _expect_error(plain, match="not a NIfTI-1/NIfTI-2 image")


def test_truncated_gzip_is_refused(tmp_path):
    raw = nifti_bytes(_volume(), AFFINE)
    path = tmp_path / "trunc.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    _expect_error(path, match="truncated gzip stream")


def test_flipped_bytes_in_compressed_stream_are_refused(tmp_path):
    raw = bytearray(nifti_bytes(np.random.default_rng(0).integers(0, 4, (30, 30, 30), dtype=np.uint8), AFFINE))
    mid = len(raw) // 2
    raw[mid : mid + 4] = bytes(b ^ 0xFF for b in raw[mid : mid + 4])
    path = tmp_path / "flip.nii.gz"
    path.write_bytes(bytes(raw))
    _expect_error(path, match="gzip stream")


def test_crc_mismatch_is_refused(tmp_path):
    """A stream that inflates fine but whose CRC is wrong: nibabel alone would read it silently."""
    raw = bytearray(nifti_bytes(_volume(), AFFINE))
    raw[-8] ^= 0xFF  # the CRC32 field of the gzip trailer
    path = tmp_path / "crc.nii.gz"
    path.write_bytes(bytes(raw))
    _expect_error(path, match="corrupt gzip stream")


def test_non_nifti_file_is_refused(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"this is a text file, not an image\n" * 20))
    _expect_error(path, match="not a NIfTI")


def test_whole_number_floats_are_accepted(tmp_path):
    path = write_nifti(tmp_path / "f.nii.gz", _volume().astype(np.float32), AFFINE)
    image = read_label_image(path, "f")
    assert np.issubdtype(image.labels.dtype, np.integer)
    np.testing.assert_array_equal(image.labels, _volume())


def test_fractional_floats_are_refused(tmp_path):
    data = _volume().astype(np.float32)
    data[3, 3, 3] = 1.5
    path = write_nifti(tmp_path / "f.nii.gz", data, AFFINE)
    _expect_error(path, match="non-integer values (e.g. [1.5])")


def test_nan_labels_are_refused(tmp_path):
    data = _volume().astype(np.float32)
    data[0, 0, 0] = np.nan
    _expect_error(write_nifti(tmp_path / "n.nii.gz", data, AFFINE), match="NaN")


def test_trailing_singleton_axis_is_squeezed(tmp_path):
    path = write_nifti(tmp_path / "s.nii.gz", _volume()[..., None], AFFINE)
    assert read_label_image(path, "s").shape == (12, 10, 8)


def test_true_4d_is_refused(tmp_path):
    path = write_nifti(tmp_path / "t.nii.gz", np.stack([_volume()] * 2, axis=-1), AFFINE)
    _expect_error(path, match="expected a 3-D label volume, got shape (12, 10, 8, 2)")


def test_zooms_disagreeing_with_affine_are_refused(tmp_path):
    raw = bytearray(gzip.decompress(nifti_bytes(_volume(), AFFINE)))
    raw[80:84] = np.float32(2.0).tobytes()  # pixdim[1]; the sform still says 0.8 mm
    path = tmp_path / "z.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    _expect_error(path, match="header zooms [2.0, 0.8, 1.5] disagree with the affine's voxel sizes [0.8, 0.8, 1.5]")


def test_oblique_affine_is_accepted(tmp_path):
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.8, 1.5])
    image = read_label_image(write_nifti(tmp_path / "o.nii.gz", _volume(), affine), "o")
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)


def test_label_mapping_follows_label_map_order(tmp_path):
    data = np.zeros((4, 4, 4), dtype=np.int16)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = 205, 500, 820
    image = read_label_image(write_nifti(tmp_path / "m.nii.gz", data, AFFINE), "m")
    classes = map_labels(image, {"aorta": 820, "myocardium": 205, "left_ventricle": 500}, "m")
    assert classes.dtype == np.uint8
    assert (classes[0, 0, 0], classes[1, 1, 1], classes[2, 2, 2]) == (2, 3, 1)
    assert classes.sum() == 6


def test_unknown_label_values_are_refused_or_ignored(tmp_path):
    data = _volume()
    data[0, 0, 0] = 77
    image = read_label_image(write_nifti(tmp_path / "u.nii.gz", data, AFFINE), "u")
    with pytest.raises(CaseInputError, match=r"label values \[77\] are not in the label map") as info:
        map_labels(image, DEFAULT_LABELS, "u")
    assert "ignore_unknown_labels" in str(info.value)
    assert "map this file's values [1, 3, 77] (replace the map if it is another dataset's" in str(info.value)
    classes = map_labels(image, DEFAULT_LABELS, "u", ignore_unknown=True)
    assert classes[0, 0, 0] == 0 and classes.max() == 3


def test_chunked_lookup_maps_every_voxel_and_finds_values_in_the_last_chunk(monkeypatch):
    import vecset.data.label_image as label_image

    monkeypatch.setattr(label_image, "LOOKUP_CHUNK", 7)  # 4*5*6 = 120 voxels: 17 full chunks and a partial one
    data = np.random.default_rng(0).choice(np.array([0, 205, 500, 820], dtype=np.uint16), size=(4, 5, 6))
    label_map = {"aorta": 820, "myocardium": 205, "left_ventricle": 500}
    classes = map_labels(label_image.LabelImage(data, AFFINE, "c"), label_map, "c")
    expected = np.select([data == 820, data == 205, data == 500], [1, 2, 3], 0)
    np.testing.assert_array_equal(classes, expected)
    data.reshape(-1)[-1] = 77  # only in the partial last chunk
    with pytest.raises(CaseInputError, match=r"label values \[77\] are not in the label map"):
        map_labels(label_image.LabelImage(data, AFFINE, "c"), label_map, "c")


def test_empty_mask_is_refused(tmp_path):
    image = read_label_image(write_nifti(tmp_path / "e.nii.gz", np.zeros((5, 5, 5), np.uint8), AFFINE), "e")
    with pytest.raises(CaseInputError, match="mask is empty"):
        map_labels(image, DEFAULT_LABELS, "e")


def test_negative_and_large_raw_values_take_the_sorted_path(tmp_path):
    data = np.zeros((4, 4, 4), dtype=np.int32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = 100000, 3, -5
    image = read_label_image(write_nifti(tmp_path / "n.nii.gz", data, AFFINE), "n")
    with pytest.raises(CaseInputError, match=r"label values \[-5\] are not in the label map"):
        map_labels(image, {"a": 100000, "b": 3}, "n")
    classes = map_labels(image, {"a": 100000, "b": 3}, "n", ignore_unknown=True)
    assert (classes[0, 0, 0], classes[1, 1, 1], classes[2, 2, 2], int(classes.sum())) == (1, 2, 0, 3)


def _saved(tmp_path, name, data, affine):
    import nibabel as nib

    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("singular", "affine is singular or nearly so"),
        ("flat", "expected a 3-D label volume, got shape (8, 8)"),
        ("rgb", "is not a label type (RGB or complex data?)"),
    ],
)
def test_degenerate_affines_2d_and_rgb_images_are_refused_by_name(tmp_path, name, problem):
    """Each once passed and then crashed or misled downstream: a rank-2 affine with non-zero columns (flat
    meshes marked closed), a 2-D image (a broadcasting error), an RGB image (a TypeError)."""
    volume = np.zeros((8, 8, 8), np.int16)
    volume[2:5, 2:5, 2:5] = 1
    affine = np.eye(4)
    if name == "singular":
        affine[:3, 1] = affine[:3, 0]  # two parallel axes: every column norm is 1, the volume is 0
    data = {"flat": volume[:, :, 4], "rgb": np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])}
    path = _saved(tmp_path, f"{name}.nii.gz", data.get(name, volume), affine)
    with pytest.raises(CaseInputError, match=re.escape(problem)) as refused:
        read_label_image(path, name)
    assert str(refused.value).startswith(f"{name}: {path}:") and "\n" not in str(refused.value)


def test_label_values_the_voxel_type_cannot_hold_are_refused(tmp_path):
    """70000 in int16 voxels (or 2^64 anywhere) could never be found: the structure would be absent in silence."""
    image = read_label_image(write_nifti(tmp_path / "s.nii.gz", _volume().astype(np.int16), AFFINE), "s")
    with pytest.raises(CaseInputError, match=r"label values \{'aorta': 70000\} cannot occur in this image's int16 "
                       r"voxels \(-32768\.\.32767\)") as refused:  # fmt: skip
        map_labels(image, {"myocardium": 1, "aorta": 70000}, "s")
    assert str(refused.value).startswith(f"s: {tmp_path / 's.nii.gz'}: ") and "fix: set 'labels'" in str(refused.value)
    assert map_labels(image, {"myocardium": 1, "aorta": 3}, "s").max() == 2
