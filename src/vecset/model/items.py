"""How the model sees a case: training and validation items drawn from its sample file (vecset.data.contract).

One item = one case:
- ``surface`` (P, 3+C): surface points with one-hot labels. Uniform input sampling: the encoder input itself
  (P = n_input). FPS input sampling: a random pool of FPS_POOL × n_input points, from which
  :func:`encoder_inputs` picks n_input by farthest point sampling on the training device, for the whole
  batch at once (FPS of latent queries too) instead of per item in a DataLoader worker;
- ``points`` (n_vol + n_near, 3) and ``sdf`` (same, C): query points and per-class targets; the first n_vol
  are the volume part (uniform points, and near-surface points inside a thin structure, see below). Training
  draws the volume part balanced: ``vol_inside`` of it (by default half) inside some structure, split evenly
  over present structures, the rest outside all. Validation uses the first n_val_vol uniform volume points (the
  IoU sample) unchanged;
- ``surface_points`` (n_surface_loss, 3) and ``surface_labels``: for the |f_c| = 0 surface term;
- ``present`` (C,) bool. Targets of absent structures are 0 and must be masked with ``present``.

Inside-point fallback, per structure: inside volume points first; when there are too few (thin structures
such as coronaries), near-surface points inside that structure; when still too few, the remainder is
filled with outside points. Each point always keeps its own stored distances, so no point can get the
wrong sign. A training item is addressed by (epoch, case index) and its randomness comes from (seed,
epoch, case index): reproducible in any worker, and identical after a resume. Sample files are memory-mapped
(vecset.data.samples.map_samples): a worker reads only the rows it takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vecset.data import draws
from vecset.data.samples import check_case, map_samples
from vecset.geometry import random_rotation  # a proper rotation: never a mirror (hearts are chiral)
from vecset.model.fps import fps_batch
from vecset.settings import ItemSettings, ModelConfig

FPS_POOL = 4  # FPS input: candidates per picked point (bounds the device FPS on 100k-point files)


class SampleFileError(RuntimeError):
    """A sample file that cannot be used for training; the message names the file and the fix."""


def read_case(path: Path, n_classes: int, case_id: str) -> dict[str, np.ndarray]:
    """Load ``case_id``'s sample file; any problem raises SampleFileError naming the file (never a substitute),
    a file made for another case or with another number of structures than ``n_classes`` included."""
    try:
        arrays = map_samples(path)
    except FileNotFoundError:
        raise SampleFileError(f"{path}: sample file is missing; rerun the workflow to rebuild it") from None
    except Exception as err:  # zip/npz corruption surfaces as many types
        raise SampleFileError(
            f"{path}: sample file is unreadable ({type(err).__name__}: {err}); delete it and rerun the workflow"
        ) from None
    try:
        check_case(path, arrays, case_id)
    except ValueError as err:
        raise SampleFileError(str(err)) from None
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


def floored_choice(
    total: int,
    labels: np.ndarray | None,
    classes: np.ndarray,
    n: int,
    floor: float,
    rng: np.random.Generator,
    replace: bool,
) -> np.ndarray:
    """``n`` of ``total`` indices: each of ``classes`` at least ``floor`` × an equal share (n / len(classes)) of its
    own entries of ``labels`` (fewer when it has fewer), the rest uniformly over all; each index at most once, unless
    ``replace`` (fewer entries than ``n``).

    With ``floor`` 0 (``labels`` may then be None) this is one uniform draw, the same as without a floor. With a
    floor, one random permutation serves every class: a class's first entries in it are a uniform draw of its own,
    and the remaining entries in permutation order a uniform draw of the rest (2 ms for 100 k entries, where a draw
    per class took 17 ms)."""
    if floor <= 0 or labels is None or not len(classes):
        return rng.choice(total, size=n, replace=replace)
    if replace:  # fewer entries than asked: every entry, then a uniform draw for the remainder
        return np.concatenate([np.arange(total), rng.choice(total, size=n - total)]).astype(np.int64)
    quota = int(floor * n / len(classes))
    order = rng.permutation(total)
    permuted = np.asarray(labels)[order]
    chosen = np.zeros(total, dtype=bool)
    for c in classes:
        chosen[np.flatnonzero(permuted == c)[:quota]] = True
    rest = np.flatnonzero(~chosen)[: n - int(chosen.sum())]
    chosen[rest] = True
    return order[chosen]


def nearest_structure(sdf: np.ndarray) -> np.ndarray:
    """Per point (N, C) SDF row, the structure whose surface is nearest: a near-surface point's own (it was drawn
    on that surface, then moved by noise far smaller than the gaps between structures)."""
    return np.abs(np.nan_to_num(sdf, nan=np.inf)).argmin(axis=1)


def balanced_volume(
    vol_sdf: np.ndarray,
    near_sdf: np.ndarray,
    present: np.ndarray,
    n: int,
    rng: np.random.Generator,
    inside_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into vol, into near) of n query points: ``inside_fraction`` of them inside, split evenly over the
    present structures, the rest outside all.

    Only each point's own stored SDF decides where it counts as inside, so the fallback never mislabels."""
    classes = np.flatnonzero(present)
    vol_inside = vol_sdf[:, classes] < 0
    outside = np.flatnonzero(~vol_inside.any(axis=1))
    n_inside = int(n * inside_fraction) if len(classes) else 0
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


class SampleDataset(Dataset):
    """Items for training (``train=True``: random, balanced; keys (epoch, index)) or validation (fixed uniform
    volume points; keys index). An item's draws depend on its case id, the seed and the epoch, not on its index."""

    def __init__(
        self, cases: list[tuple[str, Path]], n_classes: int, settings: ItemSettings, train: bool, seed: int = 0
    ) -> None:
        if not cases:
            raise ValueError("no cases given to the dataset; check the split CSV")
        self.cases = list(cases)
        self.n_classes = n_classes
        self.settings = settings
        self.train = train
        self.seed = seed
        self._near_labels: dict[int, np.ndarray] = {}  # per case, with near_floor: 25 kB each (20 MB at 800 cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        case, path = self.cases[index]
        arrays = read_case(path, self.n_classes, case)
        s = self.settings
        rng = draws.case_rng(self.seed, case, draws.ITEMS, int(self.train), epoch if self.train else 0)
        present = arrays["present"].astype(bool)
        surface, labels = arrays["surface_points"], arrays["surface_labels"]
        if len(surface) < s.n_input:
            raise SampleFileError(f"{path}: {len(surface)} surface points, fewer than n_input={s.n_input}")
        n_taken = min(len(surface), FPS_POOL * s.n_input) if s.input_sampling == "fps" else s.n_input
        classes = np.flatnonzero(present)
        n_points = len(surface)
        input_idx = np.sort(floored_choice(n_points, labels, classes, n_taken, s.input_floor, rng, replace=False))
        surface_idx = floored_choice(
            n_points, labels, classes, s.n_surface_loss, s.near_floor, rng, replace=n_points < s.n_surface_loss
        )

        if self.train:
            vol_idx, near_extra = balanced_volume(
                arrays["vol_sdf"], arrays["near_sdf"], present, s.n_vol, rng, s.vol_inside
            )
            near_sdf = arrays["near_sdf"]
            near_labels = None
            if s.near_floor > 0:  # read only when needed, once per case and worker
                if index not in self._near_labels:
                    self._near_labels[index] = nearest_structure(near_sdf).astype(np.uint8)
                near_labels = self._near_labels[index]
            near_idx = floored_choice(
                len(near_sdf), near_labels, classes, s.n_near, s.near_floor, rng, replace=len(near_sdf) < s.n_near
            )
            near_all = np.concatenate([near_extra, near_idx])
            points = np.concatenate([arrays["vol_points"][vol_idx], arrays["near_points"][near_all]])
            sdf = np.concatenate([arrays["vol_sdf"][vol_idx], arrays["near_sdf"][near_all]])
        else:
            k = min(s.n_val_vol, len(arrays["vol_sdf"]))
            points, sdf = np.array(arrays["vol_points"][:k]), np.array(arrays["vol_sdf"][:k])
        if len(points) != (s.n_vol + s.n_near if self.train else len(points)):
            raise SampleFileError(f"{path}: too few volume points for n_vol={s.n_vol}; rerun the sample rule")
        inputs = np.asarray(surface[input_idx], dtype=np.float32)
        onehot = np.eye(self.n_classes, dtype=np.float32)[labels[input_idx]]
        surface_points = np.asarray(surface[surface_idx], dtype=np.float32)
        if self.train and (s.rotate_deg > 0 or s.scale_jitter > 0):
            rotation = random_rotation(rng, s.rotate_deg).astype(np.float32)
            factor = np.float32(1.0 + rng.uniform(-s.scale_jitter, s.scale_jitter))
            inputs, surface_points, points = (factor * (a @ rotation.T) for a in (inputs, surface_points, points))
            sdf = sdf * factor  # distances scale with an isotropic scale; a rotation keeps them
        return {
            "surface": torch.from_numpy(np.concatenate([inputs, onehot], axis=1)),
            "points": torch.from_numpy(np.asarray(points, dtype=np.float32)),
            "sdf": torch.from_numpy(np.nan_to_num(sdf, nan=0.0).astype(np.float32, copy=False)),
            "surface_points": torch.from_numpy(surface_points),
            "surface_labels": torch.from_numpy(labels[surface_idx].astype(np.int64)),
            "present": torch.from_numpy(present),
            "index": torch.tensor(index),
        }


def _gather(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(points, 1, idx[..., None].expand(-1, -1, points.shape[-1]))


def encoder_inputs(
    surface: torch.Tensor, settings: ItemSettings, model: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder input (B, n_input, 3+C) of a batch's ``surface`` and its FPS latent queries (B, M, 3+C),
    or None with learnable queries; FPS runs batched on ``surface``'s device."""
    if settings.input_sampling == "fps" and surface.shape[1] > settings.n_input:
        surface = _gather(surface, fps_batch(surface[..., :3], settings.n_input, settings.fps_backend))
    if model.latent_queries != "fps":
        return surface, None
    return surface, _gather(surface, fps_batch(surface[..., :3], model.n_latents, settings.fps_backend))
