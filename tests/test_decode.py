"""Coarse-to-fine decoding against dense decoding on the same SDF: an analytic one (thin tubes, a thin wall,
touching structures; exactly 1-Lipschitz, so the results must be equal) and a trained model (not Lipschitz:
equal within a tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vecset.eval.decode import (
    GridDecoder,
    coarse_levels,
    decode_coarse_to_fine,
    decode_dense,
    grid_resolution,
    nested_resolution,
    numpy_sdf,
)
from vecset.eval.metrics import overlap
from vecset.eval.reconstruct import grid_meshes, label_map_on_image
from vecset.settings import EvalSettings

SLOPE = EvalSettings().refine_slope


def _segment_sdf(p: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - radius


def analytic_heart(p: np.ndarray) -> np.ndarray:
    """Five exact SDFs (N, 5): a ball and a box that touch it, a thin spherical wall around the ball, a tube
    thinner than one cell of the coarse levels, and a tube of half a fine cell's radius."""
    ball = np.linalg.norm(p - [-0.3, 0.0, 0.0], axis=1) - 0.3
    q = np.abs(p - [0.25, 0.0, 0.0]) - [0.25, 0.2, 0.2]
    box = np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
    wall = np.abs(np.linalg.norm(p - [-0.3, 0.0, 0.0], axis=1) - 0.36) - 0.03
    tube = _segment_sdf(p, np.array([-0.8, -0.6, -0.5]), np.array([0.7, 0.6, 0.55]), 0.03)
    hair = _segment_sdf(p, np.array([-0.7, 0.7, -0.2]), np.array([0.6, -0.7, 0.3]), 0.012)
    return np.stack([ball, box, wall, tube, hair], axis=1)


def test_levels_halve_down_to_the_coarsest_and_spacing_sets_the_grid():
    assert [nested_resolution(r) for r in (8, 33, 64, 97, 128, 201, 291)] == [8, 33, 65, 97, 129, 201, 297]
    assert coarse_levels(297) == (38, 75, 149, 297)
    assert coarse_levels(129) == (17, 33, 65, 129)
    assert coarse_levels(97) == (25, 49, 97)
    assert coarse_levels(20) == (20,)
    assert grid_resolution(70.0, 0.5, 64, 384) == 281  # a 140 mm cube at 0.5 mm: 35 × 8 cells + 1
    assert grid_resolution(70.0, 0.1, 64, 384) == 385  # capped: 384 → 385 (24 × 16 cells + 1)
    assert grid_resolution(70.0, None, 128, 384) == 129


@pytest.fixture(scope="module")
def analytic_grids():
    sdf = numpy_sdf(analytic_heart)
    return decode_dense(sdf, 97), decode_coarse_to_fine(sdf, 97, SLOPE)


def test_coarse_to_fine_equals_dense_on_an_exact_sdf_at_a_fraction_of_the_points(analytic_grids):
    dense, fine = analytic_grids
    assert fine.levels == (25, 49, 97) and fine.decoded_points < dense.decoded_points / 4, fine.dense_fraction
    assert torch.equal(dense.values < 0, fine.values < 0), "every node keeps its sign"
    for name, a, b in zip(
        ["ball", "box", "wall", "tube", "hair"], grid_meshes(dense.values, 0, 1), grid_meshes(fine.values, 0, 1),
        strict=True,
    ):  # fmt: skip
        assert a.n_faces > 0, name
        assert np.array_equal(a.faces, b.faces) and np.allclose(a.vertices, b.vertices, atol=1e-6), name


def test_label_maps_of_coarse_to_fine_equal_dense_on_an_oblique_grid(analytic_grids):
    dense, fine = analytic_grids
    affine = np.array([[0.9, 0.2, 0.0, -40.0], [-0.2, 0.9, 0.1, -35.0], [0.0, -0.05, 1.6, -30.0], [0, 0, 0, 1]])
    center, scale = np.array([2.0, 1.0, 3.0]), 38.0
    values = [1, 2, 3, 4, 5]
    a = label_map_on_image(dense.values, center, scale, affine, (90, 90, 50), values).labels
    b = label_map_on_image(fine.values, center, scale, affine, (90, 90, 50), values).labels
    assert set(np.unique(a)) == {0, *values}
    assert (a != b).mean() < 1e-4


def test_grid_decoder_follows_the_eval_settings():
    sdf = numpy_sdf(analytic_heart)
    fine = GridDecoder(EvalSettings(spacing_mm=1.0, max_resolution=64)).decode(sdf, scale=20.0)
    assert fine.resolution == 41 and fine.dense_fraction < 1
    dense = GridDecoder(EvalSettings(resolution=33, coarse_to_fine=False)).decode(sdf, scale=20.0)
    assert dense.resolution == 33 and dense.dense_fraction == 1


def test_coarse_to_fine_on_a_trained_model_matches_dense(trained_model, sample_dir):
    """A model trained for a few hundred steps is far from 1-Lipschitz; at the default margin its coarse-to-fine
    grid still gives every structure's label map within 0.005 Dice of dense decoding, and the same meshes."""
    from vecset.data.split import read_split_csv
    from vecset.eval.encoding import encode_dataset, encoding_dataset, latent_sdf

    model, plan = trained_model
    cases = read_split_csv(sample_dir / "splits" / "val.csv")
    dataset = encoding_dataset(model, plan, cases)
    fractions = []
    for _, z in encode_dataset(model, dataset, batch_size=2):
        sdf = latent_sdf(model, z)
        dense, fine = decode_dense(sdf, 65), decode_coarse_to_fine(sdf, 65, SLOPE)
        fractions.append(fine.dense_fraction)
        for c in range(dense.values.shape[0]):
            a, b = (dense.values[c] < 0).numpy(), (fine.values[c] < 0).numpy()
            if a.any():
                assert overlap(a, b)[0] >= 0.995, c
        for a, b in zip(grid_meshes(dense.values, 0, 1), grid_meshes(fine.values, 0, 1), strict=True):
            assert abs(a.n_faces - b.n_faces) <= 0.005 * max(a.n_faces, 1)
    assert np.mean(fractions) < 0.5, fractions


def test_cases_encoded_in_batches_equal_cases_encoded_one_at_a_time(trained_model, sample_dir):
    from vecset.data.split import read_split_csv
    from vecset.eval.encoding import encode_batch, encode_dataset, encoding_dataset

    model, plan = trained_model
    cases = read_split_csv(sample_dir / "splits" / "train.csv") + read_split_csv(sample_dir / "splits" / "val.csv")
    dataset = encoding_dataset(model, plan, cases)
    batched = list(encode_dataset(model, dataset, batch_size=3, workers=1))
    assert [index for index, _ in batched] == list(range(len(cases)))
    for index, z in batched:
        alone = encode_batch(model, dataset[index]["surface"][None], dataset.settings)[0]
        assert torch.allclose(z, alone, atol=1e-5), index
