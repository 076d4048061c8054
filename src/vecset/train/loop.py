"""Optimizer steps and validation passes (what 3DShape2VecSet keeps in engine_ae.py).

:func:`training_batches` is the run's one DataLoader: its batch sampler walks epoch after epoch from where the
run's progress says, so its workers start once and keep going across epochs. :func:`train_step` runs one
optimizer step (``accum_steps`` micro-batches, fewer at an epoch's end) with one host sync: the stop flag,
the NaN check and the loss travel in one all-reduce. Loss terms are summed on the device (:class:`EpochMeter`)
and read once per epoch. :func:`validate` scores the weight average on the validation cases. All of it runs
on every rank: each rank takes its share, and the numbers that decide something are all-reduced so that
every rank decides the same.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from vecset.model.items import SampleDataset, encoder_inputs
from vecset.model.vecset import VecSetAutoEncoder
from vecset.preemption import StopRequest, ignore_stop_signals_in_loader_worker
from vecset.settings import TrainSettings
from vecset.train.distributed import Ranks, all_reduce
from vecset.train.losses import iou_counts, masked_l1, per_class_iou
from vecset.train.objective import Objective
from vecset.train.state import RunState

PREFETCH_BATCHES = 4  # per worker: covers a slow item without holding many batches in memory


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the epoch, step and each term, ``indices`` the step's
    training cases on this rank (the trainer adds their sample files to the message)."""

    def __init__(self, message: str, indices: list[int] | None = None) -> None:
        super().__init__(message)
        self.indices = sorted(set(indices or []))


def lr_at(step: int, total_steps: int, t: TrainSettings) -> float:
    """Linear warmup to ``lr`` over warmup_steps, then cosine decay to ``min_lr`` at total_steps."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    span = max(1, total_steps - t.warmup_steps)
    x = min(1.0, (step - t.warmup_steps) / span)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + math.cos(math.pi * x))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class RunBatches(Sampler[list[tuple[int, int]]]):
    """This rank's batches of (epoch, case index) keys, epoch after epoch without end, from ``start_epoch``
    with its first ``skip`` batches left out (a resumed epoch). Each epoch is DistributedSampler's shuffle of
    that epoch: every rank gets ceil(n / world) cases."""

    def __init__(self, n_cases: int, ranks: Ranks, batch_size: int, seed: int, start_epoch: int, skip: int) -> None:
        cases: Any = range(n_cases)  # DistributedSampler needs only len()
        self.sampler: DistributedSampler[int] = DistributedSampler(cases, ranks.world, ranks.rank, seed=seed)
        self.batch_size, self.start_epoch, self.skip = batch_size, start_epoch, skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, skip = self.start_epoch, self.skip
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for first in range(skip * self.batch_size, len(order), self.batch_size):
                yield [(epoch, index) for index in order[first : first + self.batch_size]]
            epoch, skip = epoch + 1, 0


@contextlib.contextmanager
def training_batches(
    dataset: SampleDataset, run: RunState, ranks: Ranks
) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
    """The run's training batches from where its progress is, through one DataLoader whose workers
    (train.num_workers, or from the rank's CPUs) start once, prefetch, and pin memory for the GPU. Leaving
    the block ends the workers in order, whatever raised: they ignore stop signals (vecset.preemption), so
    Python's exit-time SIGTERM would not end them."""
    t, gpu = run.plan.train, ranks.device.type == "cuda"
    workers = t.loader_workers(gpu)
    loader = DataLoader(
        dataset,
        batch_sampler=RunBatches(len(dataset), ranks, t.batch_size, run.plan.seed, *run.progress.position),
        num_workers=workers,
        pin_memory=gpu,
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
        worker_init_fn=ignore_stop_signals_in_loader_worker,
        generator=torch.Generator().manual_seed(run.plan.seed),  # not a draw from the global RNG a resume restores
    )
    batches = iter(loader)
    try:
        yield batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()


class EpochMeter:
    """An epoch's sums on the device (loss terms, gradient norms) and on the host (time, data wait)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.micro_batches = self.steps = self.samples = 0
        self.data_wait = 0.0
        self.started = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def record(self, epoch: int, step: int, lr: float, world: int) -> dict[str, Any]:
        """The epoch's line of metrics.jsonl: mean terms, gradient norm, time per step and data wait (the
        epoch's wall time, so an epoch with a validation or a save shows it in step_seconds)."""
        names = list(self.sums)
        values = torch.stack([self.sums[k] for k in names]).tolist() if names else []  # the one read per epoch
        seconds = time.perf_counter() - self.started
        means = {
            f"train_{k}" if k != "grad_norm" else k: v / max(1, self.steps if k == "grad_norm" else self.micro_batches)
            for k, v in zip(names, values, strict=True)
        }
        return {
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "seconds": round(seconds, 3),
            "step_seconds": round(seconds / max(1, self.steps), 4),
            "data_wait_seconds": round(self.data_wait / max(1, self.steps), 4),
            "data_wait_fraction": round(self.data_wait / max(seconds, 1e-9), 4),
            "samples_per_second": round(self.samples * world / max(seconds, 1e-9), 2),
        } | means


@dataclass
class StepOutcome:
    """What one optimizer step ended with: the mean loss over ranks, a stop request, an epoch's end."""

    loss: float
    stopped: bool
    epoch_done: bool


def train_step(
    run: RunState,
    objective: Objective | DistributedDataParallel,
    batches: Iterator[dict[str, torch.Tensor]],
    ranks: Ranks,
    stop: StopRequest,
    meter: EpochMeter,
) -> StepOutcome:
    """One optimizer step: forward and backward of up to ``accum_steps`` micro-batches (gradients all-reduced
    once, at the last), one all-reduce of [stop, non-finite, loss] read on the host, then the update."""
    plan, progress, device = run.plan, run.progress, ranks.device
    amp = device.type == "cuda"
    # An epoch's last step may have fewer micro-batches; each counts 1/n of the step's gradient either way.
    accum = min(plan.train.accum_steps, plan.micro_batches_per_epoch - progress.batch_in_epoch)
    step_loss, micro = torch.zeros((), device=device), 0
    terms: dict[str, torch.Tensor] = {}
    indices: list[torch.Tensor] = []  # the step's case indices, to name their files if the loss is not finite
    while True:
        waited = time.perf_counter()
        batch = _to(next(batches), device)
        inputs = encoder_inputs(batch["surface"], plan.train.items, plan.model)
        meter.data_wait += time.perf_counter() - waited
        micro += 1
        indices.append(batch["index"])
        last = micro == accum
        sync: contextlib.AbstractContextManager = contextlib.nullcontext()
        if isinstance(objective, DistributedDataParallel) and not last:
            sync = objective.no_sync()  # gradients are all-reduced once, at the step's last micro-batch
        with sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, terms = objective(batch, *inputs)
            (loss / accum).backward()
        step_loss = step_loss + loss.detach().float()
        meter.add({"loss": loss, **terms})
        meter.micro_batches += 1
        meter.samples += len(batch["points"])
        if last:
            break
    stop_flag = torch.full((), float(stop.requested), device=device)  # a fill: no host-to-device copy
    flags = all_reduce(torch.stack([stop_flag, step_loss / micro]))
    requested, loss_sum = flags.tolist()  # the step's one host sync
    if not math.isfinite(loss_sum):
        raise _non_finite(run, loss_sum, terms, [int(i) for t in indices for i in t.tolist()])
    grad_norm = run.step(lr_at(progress.step, plan.total_steps, plan.train))
    meter.add({"grad_norm": grad_norm})
    meter.steps += 1
    progress.batch_in_epoch += micro
    epoch_done = progress.batch_in_epoch == plan.micro_batches_per_epoch
    if epoch_done:
        progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
    return StepOutcome(loss_sum / ranks.world, requested > 0, epoch_done)


def _non_finite(run: RunState, loss: float, terms: dict[str, torch.Tensor], indices: list[int]) -> NonFiniteLossError:
    detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
    p = run.plan
    return NonFiniteLossError(
        f"run {p.run}: loss became {loss} at epoch {run.progress.epoch}, step {run.progress.step} ({detail} on "
        f"this rank); lower train.lr (now {p.train.lr}) or check the step's sample files",
        indices,
    )


def validate(model: VecSetAutoEncoder, dataset: SampleDataset, ranks: Ranks) -> dict[str, torch.Tensor]:
    """Per-class IoU (summed over items) and item counts over this rank's share of the validation set,
    all-reduced: every rank returns the totals."""
    c, device = dataset.n_classes, ranks.device
    sums = torch.zeros(c, dtype=torch.float64, device=device)
    counts = torch.zeros(c, dtype=torch.float64, device=device)
    l1 = torch.zeros(2, dtype=torch.float64, device=device)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for index in range(ranks.rank, len(dataset), ranks.world):
            item = _to({k: v[None] for k, v in dataset[index].items()}, device)
            surface, latent_points = encoder_inputs(item["surface"], dataset.settings, model.config)
            pred = model(surface, item["points"], latent_points)[0].float()
            inter, union = iou_counts(pred, item["sdf"])
            iou = per_class_iou(inter, union, item["present"])[0]
            sums += torch.nan_to_num(iou, nan=0.0).double()
            counts += item["present"][0].double()
            l1 += torch.stack([masked_l1(pred, item["sdf"], item["present"]).double(), l1.new_ones(())])
    model.train()
    totals = all_reduce(torch.cat([sums, counts, l1]))
    return {"iou_sum": totals[:c], "count": totals[c : 2 * c], "l1": totals[2 * c] / totals[2 * c + 1].clamp(min=1)}


def summarise_validation(result: dict[str, torch.Tensor], names: list[str], thin: tuple[str, ...]) -> dict[str, float]:
    """val_iou/<structure>, val_mean_iou over present structures, and the large / thin means separately."""
    per_class = (result["iou_sum"] / result["count"].clamp(min=1)).tolist()
    seen = [n > 0 for n in result["count"].tolist()]
    metrics = {f"val_iou/{name}": value for name, value, ok in zip(names, per_class, seen, strict=True) if ok}
    groups = {"val_mean_iou": names, "val_mean_iou_large": [n for n in names if n not in thin]}
    if thin:
        groups["val_mean_iou_thin"] = [n for n in names if n in thin]
    for key, members in groups.items():
        values = [metrics[f"val_iou/{n}"] for n in members if f"val_iou/{n}" in metrics]
        if values:
            metrics[key] = sum(values) / len(values)
    metrics["val_l1"] = float(result["l1"])
    return metrics
