"""A trained model as a per-class SDF of one case: its cases as the model was trained to see them, the
latent set of one case, and the decoder over that latent set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vecset.eval.reconstruct import SdfFunction
from vecset.model.items import SampleDataset, encoder_inputs
from vecset.model.vecset import VecSetAutoEncoder
from vecset.plan import RunPlan
from vecset.settings import ItemSettings


def encoding_dataset(model: VecSetAutoEncoder, plan: RunPlan, cases: list[tuple[str, Path]]) -> SampleDataset:
    """Cases as the run's model was trained to see them (its item settings), deterministic (validation mode)."""
    return SampleDataset(cases, model.config.n_classes, plan.train.items, False, seed=plan.seed)


def encode_item(model: VecSetAutoEncoder, item: dict[str, torch.Tensor], settings: ItemSettings) -> torch.Tensor:
    """The latent set (M, D) of one dataset item drawn with ``settings``."""
    with torch.no_grad():
        z, _ = model.encode(*encoder_inputs(item["surface"][None], settings, model.config))
    return z[0]


def latent_sdf(model: VecSetAutoEncoder, z: torch.Tensor) -> SdfFunction:
    """The model's per-class SDF for one latent set (M, D), as a numpy function of normalised points."""
    with torch.no_grad():
        context = model.latent_context(z[None])

    def sdf(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.query(context, torch.from_numpy(points).float()[None])[0].numpy()

    return sdf
