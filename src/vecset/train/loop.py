"""One epoch of training and one validation pass (what 3DShape2VecSet keeps in engine_ae.py).

``train_one_epoch`` runs the optimizer steps of an epoch from where the run's progress says, stopping early
at a step boundary when a stop was requested; ``validate`` scores the weight average on the validation cases.
Both are written for every rank: each rank takes its share, and the numbers that decide something (stop,
NaN, IoU) are all-reduced so that every rank decides the same.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from vecset.model.items import SampleDataset
from vecset.preemption import StopRequest
from vecset.settings import TrainSettings
from vecset.train.distributed import Ranks, all_reduce, weight_spread
from vecset.train.losses import iou_counts, masked_l1, per_class_iou
from vecset.train.objective import Objective
from vecset.train.run_log import RunLog
from vecset.train.state import RunState


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the epoch, step and each term."""


def lr_at(step: int, total_steps: int, t: TrainSettings) -> float:
    """Linear warmup to ``lr`` over warmup_steps, then cosine decay to ``min_lr`` at total_steps."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    span = max(1, total_steps - t.warmup_steps)
    x = min(1.0, (step - t.warmup_steps) / span)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + math.cos(math.pi * x))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class EpochResult:
    """The epoch's record for metrics.jsonl (so far), and whether it ended early on a stop request."""

    record: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False


def _loader(dataset: SampleDataset, sampler: DistributedSampler, run: RunState, device: torch.device) -> DataLoader:
    """This rank's remaining batches of the current epoch (a resumed epoch skips the ones already done)."""
    epoch, batch_size = run.progress.epoch, run.plan.train.batch_size
    sampler.set_epoch(epoch)
    dataset.set_epoch(epoch)
    order = list(sampler)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return DataLoader(
        dataset,
        batch_sampler=batches[run.progress.batch_in_epoch :],
        num_workers=run.plan.train.num_workers,
        pin_memory=device.type == "cuda",
    )


def train_one_epoch(
    run: RunState,
    objective: Objective | DistributedDataParallel,
    dataset: SampleDataset,
    sampler: DistributedSampler,
    ranks: Ranks,
    stop: StopRequest,
    log: RunLog,
) -> EpochResult:
    """The rest of the current epoch: forward and backward per micro-batch, an optimizer step every
    ``accum_steps`` of them; returns early, after a step, when any rank was asked to stop."""
    plan, progress, device = run.plan, run.progress, ranks.device
    accum, amp = plan.train.accum_steps, device.type == "cuda"
    micro_per_epoch = plan.micro_batches_per_epoch  # the run's plan counts its cases and ranks
    sums: dict[str, float] = {}
    seen, started = 0, time.perf_counter()
    bar = log.bar(total=plan.steps_per_epoch, initial=progress.batch_in_epoch // accum, epoch=progress.epoch)
    micro = progress.batch_in_epoch
    result = EpochResult()
    for batch in _loader(dataset, sampler, run, device):
        batch = _to(batch, device)
        micro += 1
        boundary = micro % accum == 0 or micro == micro_per_epoch
        sync: contextlib.AbstractContextManager = contextlib.nullcontext()
        if isinstance(objective, DistributedDataParallel) and not boundary:
            sync = objective.no_sync()  # gradients are all-reduced once, at the step boundary
        with sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, terms = objective(batch)
            (loss / accum).backward()
        seen += 1
        for k, v in {"loss": loss.detach(), **terms}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if not boundary:
            continue
        flags = all_reduce(torch.tensor([float(stop.requested), float(not torch.isfinite(loss))], device=device))
        if flags[1] > 0:
            raise _non_finite(run, loss, terms, log)
        lr = lr_at(progress.step, plan.total_steps, plan.train)
        grad_norm = run.step(lr)
        progress.batch_in_epoch = micro
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr:.2e}")
        log.step(progress.step, {"train/loss": float(loss), "train/lr": lr, "train/grad_norm": grad_norm})
        if flags[0] > 0:
            result.stopped = True
            break
    bar.close()
    result.record = {
        "epoch": progress.epoch + 1,
        "step": progress.step,
        "lr": lr_at(max(progress.step - 1, 0), plan.total_steps, plan.train),
        "seconds": round(time.perf_counter() - started, 3),
    } | {f"train_{k}": v / max(1, seen) for k, v in sums.items()}
    if ranks.world > 1 and not result.stopped:
        result.record["ddp_weight_spread"] = weight_spread(run.model)
    return result


def _non_finite(run: RunState, loss: torch.Tensor, terms: dict[str, torch.Tensor], log: RunLog) -> NonFiniteLossError:
    detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
    p = run.progress
    return NonFiniteLossError(
        f"run {run.plan.run}: loss became {float(loss)} at epoch {p.epoch}, step {p.step} ({detail}); "
        f"lower train.lr (now {run.plan.train.lr}) or check the sample files; the last good state is "
        f"{log.state_dir / 'last.pt'}"
    )


def validate(model: torch.nn.Module, dataset: SampleDataset, ranks: Ranks) -> dict[str, torch.Tensor]:
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
            pred, _ = model(item["surface"], item["points"], item.get("latent_points"))
            pred = pred.float()
            inter, union = iou_counts(pred, item["sdf"])
            iou = per_class_iou(inter, union, item["present"])[0]
            sums += torch.nan_to_num(iou, nan=0.0).double()
            counts += item["present"][0].double()
            l1 += torch.tensor([masked_l1(pred, item["sdf"], item["present"]).item(), 1.0], device=device).double()
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
