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
    assert item["surface_points"].shape == (100, 3) and item["present"].dtype == torch.bool
    assert torch.isfinite(item["sdf"]).all()
    # Same (epoch, case) → same item, in any process; another epoch → another draw.
    assert torch.equal(ds[(0, 0)]["points"], item["points"])
    assert not torch.equal(ds[(1, 0)]["points"], item["points"])


def test_a_case_s_items_do_not_depend_on_the_other_cases_or_their_order(sample_dir):
    cases = read_split_csv(sample_dir / "splits" / "train.csv")
    assert len(cases) >= 2
    alone = [cases[1]]
    for train in (True, False):
        listed, single = SampleDataset(cases, 10, SETTINGS, train), SampleDataset(alone, 10, SETTINGS, train)
        for key in ("surface", "points", "surface_points"):
            assert torch.equal(listed[(3, 1)][key], single[(3, 0)][key]), (train, key)
    # Training and validation draw apart, and neither repeats the sample file's own stream.
    from vecset.data.draws import ITEMS, case_rng

    case = cases[0][0]
    firsts = [case_rng(0, case, *stream).integers(1 << 62) for stream in ((), (ITEMS, 1, 0), (ITEMS, 0, 0))]
    assert len(set(firsts)) == 3


def test_memory_mapped_sample_file_equals_the_loaded_one_and_is_read_only(sample_dir):
    from vecset.data.samples import map_samples

    path = read_split_csv(sample_dir / "splits" / "train.csv")[0][1]
    mapped, loaded = map_samples(path), load_samples(path)
    assert mapped.keys() == loaded.keys()
    for key, value in loaded.items():
        assert mapped[key].dtype == value.dtype and mapped[key].shape == value.shape, key
        assert np.array_equal(mapped[key], value, equal_nan=value.dtype.kind == "f"), key
    assert not mapped["vol_sdf"].flags.writeable


def test_fps_input_is_a_pool_that_the_device_step_reduces_to_n_input(sample_dir):
    from vecset.model.items import FPS_POOL, encoder_inputs
    from vecset.settings import preset_config

    fps = ItemSettings(n_input=64, input_sampling="fps", n_vol=40, n_near=30, n_surface_loss=10)
    ds = SampleDataset(read_split_csv(sample_dir / "splits" / "train.csv"), 10, fps, train=True)
    batch = torch.stack([ds[(0, 0)]["surface"], ds[(0, 1)]["surface"]])
    assert batch.shape == (2, FPS_POOL * 64, 13)
    model = preset_config("tiny", 10, latent_queries="fps", n_latents=16)
    surface, latent_points = encoder_inputs(batch, fps, model)
    assert surface.shape == (2, 64, 13) and latent_points is not None and latent_points.shape == (2, 16, 13)
    # Farther apart than a uniform draw of the same size: the picked points spread over the pool.
    gap = torch.cdist(surface[0, :, :3], surface[0, :, :3]).fill_diagonal_(9).min()
    uniform = batch[0, :64, :3]
    assert gap > torch.cdist(uniform, uniform).fill_diagonal_(9).min()


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


def test_balanced_volume_draws_the_inside_share_it_is_given(sample_dir):
    arrays = load_samples(read_split_csv(sample_dir / "splits" / "train.csv")[0][1])
    vol_sdf, near_sdf = arrays["vol_sdf"], arrays["near_sdf"]
    present = arrays["present"].astype(bool)
    inside = {}
    for fraction in (0.5, 0.25, 0.0):
        vol_idx, near_idx = balanced_volume(vol_sdf, near_sdf, present, 800, np.random.default_rng(0), fraction)
        assert len(vol_idx) + len(near_idx) == 800
        inside[fraction] = int((vol_sdf[vol_idx][:, present] < 0).any(axis=1).sum() + len(near_idx))
    # The default half, a quarter, none (the fixture's structures have enough inside points for every quota but
    # the thin one's, which outside points fill).
    assert 300 <= inside[0.5] <= 400 and 150 <= inside[0.25] <= 200 and inside[0.0] == 0


def test_rotation_augmentation_is_never_a_mirror():
    rng = np.random.default_rng(0)
    for _ in range(50):
        r = random_rotation(rng, 30.0)
        assert np.isclose(np.linalg.det(r), 1.0) and np.allclose(r @ r.T, np.eye(3))


def test_corrupt_or_missing_sample_file_is_named(tmp_path, sample_dir):
    case, good = read_split_csv(sample_dir / "splits" / "train.csv")[0]
    broken = tmp_path / "broken.npz"
    broken.write_bytes(good.read_bytes()[:5000])
    ds = SampleDataset([("broken", broken), ("missing", tmp_path / "missing.npz")], 10, SETTINGS, train=True)
    with pytest.raises(SampleFileError, match=r"broken\.npz: sample file is unreadable"):
        ds[0]
    with pytest.raises(SampleFileError, match=r"missing\.npz: sample file is missing"):
        ds[1]
    with pytest.raises(SampleFileError, match="holds 10 structures but the model has 7"):
        SampleDataset([(case, good)], 7, SETTINGS, train=True)[0]


def test_structure_floors_give_every_present_structure_its_share(sample_dir):
    from dataclasses import replace

    from vecset.model.items import nearest_structure

    cases = read_split_csv(sample_dir / "splits" / "train.csv")
    plain = SampleDataset(cases, 10, SETTINGS, train=True)
    floored = SampleDataset(cases, 10, replace(SETTINGS, input_floor=1.0, near_floor=0.5), train=True)
    a, b = plain[(0, 0)], floored[(0, 0)]
    present = np.flatnonzero(b["present"].numpy())
    by_area = a["surface"][:, 3:].sum(dim=0).numpy()[present]
    equal = b["surface"][:, 3:].sum(dim=0).numpy()[present]
    quota = 512 // len(present)
    assert by_area.min() < quota // 2, "by area the thinnest structure gets few encoder points"
    assert equal.min() >= quota - 1 and equal.sum() == 512
    near = b["sdf"][SETTINGS.n_vol :].numpy()[:, present]
    near_counts = np.bincount(nearest_structure(near), minlength=len(present))
    assert near_counts.min() >= int(0.5 * SETTINGS.n_near / len(present))
    surface_counts = np.bincount(b["surface_labels"].numpy(), minlength=10)[present]
    assert surface_counts.min() >= int(0.5 * SETTINGS.n_surface_loss / len(present))
    assert torch.equal(floored[(0, 0)]["points"], b["points"]), "still a function of (epoch, case)"
