"""A trained model as a per-class SDF of each case: its cases as the model was trained to see them, their
latent sets encoded in batches, and the decoder over one latent set, on the run's device (bf16 autocast on
a GPU, float32 on the CPU)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vecset.data.samples import load_normalisation
from vecset.eval.decode import SdfFunction
from vecset.eval.fitting import CaseSurface, fit_latents
from vecset.model.items import SampleDataset, encoder_inputs
from vecset.model.vecset import VecSetAutoEncoder
from vecset.plan import RunPlan
from vecset.settings import EvalPrecision, EvalSettings, ItemSettings

log = logging.getLogger(__name__)

# Memory one chunk of decoder queries may take: a share of the GPU's free memory, or a fixed budget on the
# CPU (where larger chunks gain nothing once the matrix products are large).
GPU_MEMORY_SHARE = 0.5
CPU_CHUNK_BYTES = 256 << 20
MIN_CHUNK, MAX_CHUNK = 4096, 1 << 21
# Cases fitted at once on the CPU (a GPU fits a whole encoding batch): the demo's 2 threads take 1.28 s per case
# fitting 4 at a time, 1.54 s at 8, 2.15 s at 16 (the step's activations outgrow the caches) and 1.51 s one by one.
CPU_FIT_CASES = 4


def encoding_dataset(model: VecSetAutoEncoder, plan: RunPlan, cases: list[tuple[str, Path]]) -> SampleDataset:
    """Cases as the run's model was trained to see them (its item settings), deterministic (validation mode)."""
    return SampleDataset(cases, model.config.n_classes, plan.train.items, False, seed=plan.seed)


def effective_precision(device: torch.device, precision: EvalPrecision) -> EvalPrecision:
    """What the model computes in on ``device``: ``precision`` on a GPU, always fp32 on the CPU."""
    return precision if device.type == "cuda" else "fp32"


@contextlib.contextmanager
def inference(device: torch.device, precision: EvalPrecision = "bf16") -> Iterator[None]:
    """No gradients; bf16 autocast where :func:`effective_precision` says bf16."""
    bf16 = effective_precision(device, precision) == "bf16"
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        yield


def model_device(model: VecSetAutoEncoder) -> torch.device:
    return next(model.parameters()).device


def encode_batch(
    model: VecSetAutoEncoder, surface: torch.Tensor, settings: ItemSettings, precision: EvalPrecision = "bf16"
) -> torch.Tensor:
    """The latent sets (B, M, D) float32 of a batch of encoder inputs (B, P, 3+C), on the model's device."""
    device = model_device(model)
    with inference(device, precision):
        z, _ = model.encode(*encoder_inputs(surface.to(device), settings, model.config))
    return z.float()


def encode_dataset(
    model: VecSetAutoEncoder,
    dataset: SampleDataset,
    batch_size: int,
    workers: int = 0,
    desc: str | None = None,
    precision: EvalPrecision = "bf16",
) -> Iterator[tuple[int, torch.Tensor]]:
    """(case index, latent set (M, D)) for every case of ``dataset``, in order, encoded ``batch_size`` cases at
    a time (items read by ``workers`` processes); with ``desc``, a progress bar over the cases on stderr."""
    loader = DataLoader(_Surfaces(dataset), batch_size=batch_size, num_workers=workers)
    with tqdm(total=len(dataset), desc=desc, unit="case", disable=desc is None, file=sys.stderr,
              mininterval=2.0) as bar:  # fmt: skip
        for keys, surface in loader:
            yield from zip(keys.tolist(), encode_batch(model, surface, dataset.settings, precision), strict=True)
            bar.update(len(keys))


def fitted_latents(
    model: VecSetAutoEncoder,
    dataset: SampleDataset,
    settings: EvalSettings,
    workers: int = 0,
    desc: str | None = None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(case index, fitted latent set (M, D), the encoder's) for every case of ``dataset``, in order: encoded
    (:func:`encode_dataset`) ``settings.batch_size`` cases at a time, then fitted to the case's own surface
    ``settings.fit_steps`` steps (vecset.eval.fitting; the two sets are one with 0 steps); each case's surface term
    before and after is logged in mm."""
    batch: list[tuple[int, torch.Tensor]] = []
    encoded = encode_dataset(model, dataset, settings.batch_size, workers, desc, settings.precision)
    for position, item in enumerate(encoded, start=1):
        batch.append(item)
        if len(batch) == settings.batch_size or position == len(dataset):
            yield from _fit_batch(model, dataset, settings, batch)
            batch = []


def _fit_batch(
    model: VecSetAutoEncoder, dataset: SampleDataset, settings: EvalSettings, batch: list[tuple[int, torch.Tensor]]
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    if settings.fit_steps == 0:
        yield from ((index, z, z) for index, z in batch)
        return
    device = model_device(model)
    bf16 = effective_precision(device, settings.precision) == "bf16"
    size = len(batch) if device.type == "cuda" else CPU_FIT_CASES
    for first in range(0, len(batch), size):
        part = batch[first : first + size]
        cases = [dataset.cases[index] for index, _ in part]
        surfaces = [CaseSurface.read(path, dataset.n_classes, case) for case, path in cases]
        start = time.perf_counter()
        fit = fit_latents(
            model, torch.stack([z for _, z in part]), surfaces, settings.fit_steps, settings.fit_lr,
            settings.fit_points, dataset.seed, bf16, settings.fit_proximal,
        )  # fmt: skip
        log.info("latent fit of %d cases, %d steps: %.1f s", len(part), settings.fit_steps, time.perf_counter() - start)
        for k, ((case, path), (index, encoded)) in enumerate(zip(cases, part, strict=True)):
            _, scale = load_normalisation(path, case)
            log.info("%s: latent fit, %d steps: surface |f| %.2f → %.2f mm", case, settings.fit_steps,
                     scale * float(fit.surface_before[k]), scale * float(fit.surface_after[k]))  # fmt: skip
            yield index, fit.z[k], encoded


class _Surfaces(Dataset):
    """(index, encoder input) of each case: all an encoding batch needs of an item."""

    def __init__(self, dataset: SampleDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.dataset[index]["surface"]


def query_chunk(model: VecSetAutoEncoder, device: torch.device) -> int:
    """Query points per decoder call that fit the device: the decoder's activations per point (query embedding,
    attention, feed-forward, head; attention scores where no fused kernel applies) against the budget."""
    c = model.config
    heads = c.width // c.dim_head
    per_point = 8 * c.width + (3 * c.ff_mult * c.width if c.decoder_ff else 0) + c.fourier_features + 4 * c.n_classes
    if device.type == "cuda":
        per_point = 4 * per_point  # fp32 or bf16; flash / memory-efficient attention keeps no scores
        free, _ = torch.cuda.mem_get_info(device)
        budget = GPU_MEMORY_SHARE * free
    else:
        per_point = 4 * (per_point + heads * c.n_latents)
        budget = CPU_CHUNK_BYTES
    return int(min(MAX_CHUNK, max(MIN_CHUNK, budget // per_point)))


def latent_sdf(model: VecSetAutoEncoder, z: torch.Tensor, precision: EvalPrecision = "bf16") -> SdfFunction:
    """The model's per-class SDF (float32) for one latent set (M, D): the latent context and the decoder's keys
    and values are computed once, then each call decodes a chunk of normalised points on the model's device."""
    device = model_device(model)
    with inference(device, precision):
        context = model.latent_context(z[None].to(device))
        kv = model.decoder_key_values(context)

    def sdf(points: torch.Tensor) -> torch.Tensor:
        with inference(device, precision):
            return model.query(context, points.to(device, torch.float32)[None], kv)[0].float()

    return sdf
