"""How the model sees a case: training and validation items drawn from its sample file (vecset.data.contract).

One item = one case:
- ``surface`` (n_input, 3+C): surface points with one-hot labels, the encoder input (FPS or uniform);
- ``latent_points`` (M, 3+C): FPS of the input, only when the model's latent queries are FPS points
  (``n_latents`` > 0);
- ``points`` (n_vol + n_near, 3) and ``sdf`` (same, C): query points and per-class targets. Training draws
  the volume part balanced: half inside some structure (split evenly over present structures), half
  outside all. Validation uses the first n_val_vol uniform volume points (the IoU sample) unchanged;
- ``surface_points`` (n_surface_loss, 3) and ``surface_labels``: for the |f_c| = 0 surface term;
- ``present`` (C,) bool. Targets of absent structures are 0 and must be masked with ``present``.

Inside-point fallback, per structure: inside volume points first; when there are too few (thin structures
such as coronaries), near-surface points inside that structure; when still too few, the remainder is
filled with outside points. Each point always keeps its own stored distances, so no point can get the
wrong sign. Randomness comes from (seed, epoch, case index): reproducible, and identical after a resume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vecset.data.samples import load_samples
from vecset.geometry import random_rotation  # a proper rotation: never a mirror (hearts are chiral)
from vecset.model.fps import fps_numpy
from vecset.settings import ItemSettings


class SampleFileError(RuntimeError):
    """A sample file that cannot be used for training; the message names the file and the fix."""


def read_case(path: Path, n_classes: int) -> dict[str, np.ndarray]:
    """Load one sample file; any problem raises SampleFileError naming the file (never a substitute), a file
    with another number of structures than ``n_classes`` included."""
    try:
        arrays = load_samples(path)
    except FileNotFoundError:
        raise SampleFileError(f"{path}: sample file is missing; rerun the workflow to rebuild it") from None
    except Exception as err:  # zip/npz corruption surfaces as many types
        raise SampleFileError(
            f"{path}: sample file is unreadable ({type(err).__name__}: {err}); delete it and rerun the workflow"
        ) from None
    got = len(arrays["present"])
    if got != n_classes:
        raise SampleFileError(
            f"{path}: holds {got} structures but the model has {n_classes}; "
            "the label map changed, rerun the sample rule"
        )
    return arrays


def _pick(rng: np.random.Generator, candidates: np.ndarray, k: int) -> np.ndarray:
    """Up to k of ``candidates`` without replacement."""
    if k <= 0 or len(candidates) == 0:
        return candidates[:0]
    return rng.choice(candidates, size=min(k, len(candidates)), replace=False)


def balanced_volume(
    vol_sdf: np.ndarray, near_sdf: np.ndarray, present: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into vol, into near) of n query points: half inside, split over present structures, half outside.

    Only each point's own stored SDF decides where it counts as inside, so the fallback never mislabels."""
    classes = np.flatnonzero(present)
    vol_inside = vol_sdf[:, classes] < 0
    outside = np.flatnonzero(~vol_inside.any(axis=1))
    n_inside = n // 2 if len(classes) else 0
    per_class = np.diff(np.linspace(0, n_inside, len(classes) + 1).astype(int))
    vol_idx, near_idx = [], []
    for j, (c, k) in enumerate(zip(classes, per_class, strict=True)):
        chosen = _pick(rng, np.flatnonzero(vol_inside[:, j]), k)
        vol_idx.append(chosen)
        if len(chosen) < k:
            near_idx.append(_pick(rng, np.flatnonzero(near_sdf[:, c] < 0), k - len(chosen)))
    taken = sum(len(a) for a in vol_idx) + sum(len(a) for a in near_idx)
    fill = _pick(rng, outside, n - taken)
    vol_idx.append(fill)
    short = n - taken - len(fill)
    if short > 0:  # not enough outside points either: any remaining volume points, each with its own SDF
        used = np.concatenate(vol_idx)
        vol_idx.append(_pick(rng, np.setdiff1d(np.arange(len(vol_sdf)), used), short))
    return np.concatenate(vol_idx).astype(np.int64), (
        np.concatenate(near_idx).astype(np.int64) if near_idx else np.zeros(0, dtype=np.int64)
    )


CACHE_AUTO_BYTES = 2 * 2**30


def cache_decision(mode: str, cases: list[tuple[str, Path]]) -> bool:
    """Whether to keep sample files in memory: always, never, or (auto) when all of them fit in 2 GiB, since
    every rank and every DataLoader worker keeps its own copy."""
    if mode != "auto":
        return mode == "always"
    return sum(Path(path).stat().st_size for _, path in cases) <= CACHE_AUTO_BYTES


class SampleDataset(Dataset):
    """Items for training (``train=True``: random, balanced) or validation (fixed uniform volume points)."""

    def __init__(
        self,
        cases: list[tuple[str, Path]],
        n_classes: int,
        settings: ItemSettings,
        train: bool,
        n_latents: int = 0,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        if not cases:
            raise ValueError("no cases given to the dataset; check the split CSV")
        self.cases = list(cases)
        self.n_classes = n_classes
        self.settings = settings
        self.train = train
        self.n_latents = n_latents
        self.seed = seed
        self.epoch = 0
        # Per process (each DataLoader worker keeps its own): worth it when all files fit in memory.
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cases)

    def _arrays(self, index: int) -> dict[str, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        arrays = read_case(self.cases[index][1], self.n_classes)
        if self._cache is not None:
            self._cache[index] = arrays
        return arrays

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        arrays = self._arrays(index)
        path = self.cases[index][1]
        s = self.settings
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 0, index, int(self.train)])
        present = arrays["present"].astype(bool)
        surface = arrays["surface_points"].astype(np.float32)
        labels = arrays["surface_labels"].astype(np.int64)
        if len(surface) < s.n_input:
            raise SampleFileError(f"{path}: {len(surface)} surface points, fewer than n_input={s.n_input}")

        if s.input_sampling == "fps":
            # FPS on a random superset keeps the per-item cost bounded on 100k-point files.
            pool = rng.choice(len(surface), size=min(len(surface), 8 * s.n_input), replace=False)
            input_idx = pool[fps_numpy(surface[pool], s.n_input, s.fps_backend)]
        else:
            input_idx = rng.choice(len(surface), size=s.n_input, replace=False)
        surface_idx = rng.choice(len(surface), size=s.n_surface_loss, replace=len(surface) < s.n_surface_loss)

        vol_sdf = np.nan_to_num(arrays["vol_sdf"].astype(np.float32), nan=0.0)
        near_sdf = np.nan_to_num(arrays["near_sdf"].astype(np.float32), nan=0.0)
        if self.train:
            vol_idx, near_extra = balanced_volume(vol_sdf, near_sdf, present, s.n_vol, rng)
            near_idx = rng.choice(len(near_sdf), size=s.n_near, replace=len(near_sdf) < s.n_near)
            points = np.concatenate(
                [arrays["vol_points"][vol_idx], arrays["near_points"][near_extra], arrays["near_points"][near_idx]]
            )
            sdf = np.concatenate([vol_sdf[vol_idx], near_sdf[near_extra], near_sdf[near_idx]])
        else:
            k = min(s.n_val_vol, len(vol_sdf))
            points, sdf = arrays["vol_points"][:k], vol_sdf[:k]
        n_vol = len(points) - (s.n_near if self.train else 0)

        onehot = np.eye(self.n_classes, dtype=np.float32)[labels[input_idx]]
        inputs = surface[input_idx]
        surface_points = surface[surface_idx]
        points = points.astype(np.float32)
        if self.train and (s.rotate_deg > 0 or s.scale_jitter > 0):
            rotation = random_rotation(rng, s.rotate_deg).astype(np.float32)
            factor = np.float32(1.0 + rng.uniform(-s.scale_jitter, s.scale_jitter))
            inputs, surface_points, points = (factor * (a @ rotation.T) for a in (inputs, surface_points, points))
            sdf = sdf * factor  # distances scale with an isotropic scale; a rotation keeps them
        item = {
            "surface": torch.from_numpy(np.concatenate([inputs, onehot], axis=1)),
            "points": torch.from_numpy(points),
            "sdf": torch.from_numpy(sdf.astype(np.float32)),
            "n_vol": torch.tensor(n_vol),
            "surface_points": torch.from_numpy(surface_points.astype(np.float32)),
            "surface_labels": torch.from_numpy(labels[surface_idx]),
            "present": torch.from_numpy(present),
            "index": torch.tensor(index),
        }
        if self.n_latents:
            latent_idx = fps_numpy(inputs, self.n_latents, s.fps_backend)
            item["latent_points"] = item["surface"][torch.from_numpy(latent_idx)]
        return item
