"""Training items from real sample files: shapes, sign-safe balancing on thin structures, no mirror, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vecset.data.samples import load_samples
from vecset.data.split import read_split_csv
from vecset.geometry import random_rotation
from vecset.model.items import SampleDataset, SampleFileError, balanced_volume
from vecset.settings import ItemSettings

SETTINGS = ItemSettings(n_input=512, n_vol=400, n_near=300, n_surface_loss=100, n_val_vol=1000)


def test_train_item_shapes_and_one_hot(sample_dir):
    ds = SampleDataset(read_split_csv(sample_dir / "splits" / "train.csv"), 10, SETTINGS, train=True)
    item = ds[0]
    assert item["surface"].shape == (512, 13)
    assert torch.all(item["surface"][:, 3:].sum(dim=1) == 1)
    assert item["points"].shape == (700, 3) and item["sdf"].shape == (700, 10)
    assert int(item["n_vol"]) == 400
    assert item["surface_points"].shape == (100, 3) and item["present"].dtype == torch.bool
    assert torch.isfinite(item["sdf"]).all()
    # Same epoch → same item; another epoch → another draw.
    assert torch.equal(ds[0]["points"], item["points"])
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["points"], item["points"])


def test_validation_items_are_the_stored_uniform_points(sample_dir):
    cases = read_split_csv(sample_dir / "splits" / "val.csv")
    item = SampleDataset(cases, 10, SETTINGS, train=False)[0]
    stored = load_samples(cases[0][1])
    assert np.allclose(item["points"].numpy(), stored["vol_points"][:1000])
    assert np.allclose(item["sdf"].numpy(), np.nan_to_num(stored["vol_sdf"][:1000]))


def test_balanced_volume_never_mislabels_a_thin_structure(sample_dir):
    arrays = load_samples(read_split_csv(sample_dir / "splits" / "train.csv")[0][1])
    names = list(arrays["class_names"])
    thin = names.index("coronary_arteries")
    vol_sdf, near_sdf = arrays["vol_sdf"], arrays["near_sdf"]
    present = arrays["present"].astype(bool)
    few_inside = int((vol_sdf[:, thin] < 0).sum())
    assert few_inside < 40, "fixture should have a structure with few uniform points inside"
    vol_idx, near_idx = balanced_volume(vol_sdf, near_sdf, present, 800, np.random.default_rng(0))
    assert len(vol_idx) + len(near_idx) == 800
    assert len(set(vol_idx.tolist())) == len(vol_idx) and len(set(near_idx.tolist())) == len(near_idx)
    # The thin structure's quota (40 = 400 inside points / 10 structures) is topped up from near points inside
    # it, as far as there are any; the rest of the quota goes to outside points, never to mislabelled ones.
    available = few_inside + int((near_sdf[:, thin] < 0).sum())
    thin_inside = (vol_sdf[vol_idx, thin] < 0).sum() + (near_sdf[near_idx, thin] < 0).sum()
    assert thin_inside >= min(40, available) and (near_sdf[near_idx, thin] < 0).sum() > 0
    # Every near point taken by the fallback is inside the structure that asked for it.
    assert np.all((near_sdf[near_idx][:, present] < 0).any(axis=1))


def test_rotation_augmentation_is_never_a_mirror():
    rng = np.random.default_rng(0)
    for _ in range(50):
        r = random_rotation(rng, 30.0)
        assert np.isclose(np.linalg.det(r), 1.0) and np.allclose(r @ r.T, np.eye(3))


def test_corrupt_or_missing_sample_file_is_named(tmp_path, sample_dir):
    good = read_split_csv(sample_dir / "splits" / "train.csv")[0][1]
    broken = tmp_path / "broken.npz"
    broken.write_bytes(good.read_bytes()[:5000])
    ds = SampleDataset([("broken", broken), ("missing", tmp_path / "missing.npz")], 10, SETTINGS, train=True)
    with pytest.raises(SampleFileError, match=r"broken\.npz: sample file is unreadable"):
        ds[0]
    with pytest.raises(SampleFileError, match=r"missing\.npz: sample file is missing"):
        ds[1]
    with pytest.raises(SampleFileError, match="holds 10 structures but the model has 7"):
        SampleDataset([("x", good)], 7, SETTINGS, train=True)[0]
