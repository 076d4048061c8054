"""Distributed, resumable training of one run (launched by ``torchrun``; one process per rank).

State lives in ``state_dir`` (never a declared Snakemake output, so a failed or requeued job keeps it):
``last.pt`` every epoch, ``best.pt`` on validation improvement, ``metrics.jsonl``, TensorBoard and wandb
folders. A start resumes from ``last.pt`` when its fingerprint (settings + data) matches. SIGTERM/SIGUSR1
make every rank stop at the next optimizer step; rank 0 saves ``last.pt`` and the process exits with
PREEMPTED_EXIT so the scheduler can requeue. When all epochs are done the declared outputs are copied
from the state folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from vecset.model.vecset import ModelConfig, VecSetAutoEncoder, preset_config
from vecset.train.checkpoint import copy_atomic, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vecset.train.dataset import SampleDataset, read_case
from vecset.train.losses import iou_counts, masked_l1, per_class_iou
from vecset.train.objective import Objective
from vecset.train.run_log import RunLog
from vecset.train.settings import TrainSettings

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request, state saved, rerun to resume


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the message names the epoch, step and each term."""


@dataclass(frozen=True)
class RunPaths:
    state_dir: Path
    checkpoint_best: Path
    checkpoint_last: Path
    metrics: Path


@dataclass
class Progress:
    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -math.inf
    wandb_id: str | None = None


class StopRequest:
    """Records SIGTERM / SIGUSR1 so the loop can stop cleanly at the next step."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def lr_at(step: int, total_steps: int, settings: TrainSettings) -> float:
    """Linear warmup to ``lr`` over warmup_steps, then cosine decay to ``min_lr`` at total_steps."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = max(1, total_steps - settings.warmup_steps)
    t = min(1.0, (step - settings.warmup_steps) / span)
    return settings.min_lr + 0.5 * (settings.lr - settings.min_lr) * (1.0 + math.cos(math.pi * t))


def data_signature(cases: list[tuple[str, Path]]) -> str:
    """Hash of the case ids and their sample files' sizes and modification times."""
    digest = hashlib.sha256()
    for case, path in sorted(cases):
        stat = Path(path).stat()
        digest.update(f"{case}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _all_reduce(tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def _device(settings: TrainSettings) -> torch.device:
    use_cuda = settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no GPU is visible; set device: cpu or auto")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(
    model: VecSetAutoEncoder, dataset: SampleDataset, rank: int, world: int, device: torch.device, amp: bool
) -> dict[str, torch.Tensor]:
    """Per-class IoU (summed over items) and item counts over this rank's share of the validation set,
    all-reduced: every rank returns the totals."""
    c = dataset.n_classes
    sums = torch.zeros(c, dtype=torch.float64, device=device)
    counts = torch.zeros(c, dtype=torch.float64, device=device)
    l1 = torch.zeros(2, dtype=torch.float64, device=device)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for index in range(rank, len(dataset), world):
            item = _to({k: v[None] for k, v in dataset[index].items()}, device)
            pred, _ = model(item["surface"], item["points"], item.get("latent_points"))
            pred = pred.float()
            inter, union = iou_counts(pred, item["sdf"])
            iou = per_class_iou(inter, union, item["present"])[0]
            sums += torch.nan_to_num(iou, nan=0.0).double()
            counts += item["present"][0].double()
            l1 += torch.tensor([masked_l1(pred, item["sdf"], item["present"]).item(), 1.0], device=device).double()
    model.train()
    totals = _all_reduce(torch.cat([sums, counts, l1]))
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


CACHE_AUTO_BYTES = 2 * 2**30


def cache_decision(mode: str, cases: list[tuple[str, Path]]) -> bool:
    """Whether to keep sample files in memory: always, never, or (auto) when all of them fit in 2 GiB, since
    every rank and every DataLoader worker keeps its own copy."""
    if mode != "auto":
        return mode == "always"
    return sum(Path(path).stat().st_size for _, path in cases) <= CACHE_AUTO_BYTES


def weight_spread(model: torch.nn.Module) -> float:
    """Largest difference between ranks of a checksum of all weights: 0 when DDP keeps ranks in step."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    high, low = checksum.clone(), -checksum.clone()
    _all_reduce(high, dist.ReduceOp.MAX)
    _all_reduce(low, dist.ReduceOp.MAX)
    return float(high + low)


def _resume_state(paths: RunPaths, fingerprint: str, log: RunLog) -> dict[str, Any] | None:
    last = paths.state_dir / "last.pt"
    if not last.exists():
        return None
    state = load_checkpoint(last)
    if state.get("fingerprint") == fingerprint:
        return state
    previous = paths.state_dir / "previous"
    if log.is_main:
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir(parents=True)
        for name in ("last.pt", "best.pt", "metrics.jsonl"):
            if (paths.state_dir / name).exists():
                os.replace(paths.state_dir / name, previous / name)
        log.message(
            f"state in {paths.state_dir} is from other settings or data "
            f"({state.get('fingerprint')} != {fingerprint}); starting fresh, old state moved to {previous}"
        )
    return None


def train(
    settings: TrainSettings,
    train_cases: list[tuple[str, Path]],
    val_cases: list[tuple[str, Path]],
    paths: RunPaths,
    run_name: str = "run",
) -> int:
    """Train (or resume, or just finish) one run; returns the process exit code (0 done, PREEMPTED_EXIT stopped)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = _device(settings)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    stop = StopRequest()
    try:
        return _train(settings, train_cases, val_cases, paths, run_name, rank, world, device, stop)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(
    settings: TrainSettings,
    train_cases: list[tuple[str, Path]],
    val_cases: list[tuple[str, Path]],
    paths: RunPaths,
    run_name: str,
    rank: int,
    world: int,
    device: torch.device,
    stop: StopRequest,
) -> int:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in read_case(train_cases[0][1], n_classes=None)["class_names"]]
    n_classes = len(names)
    fingerprint = f"{settings.fingerprint()}-{data_signature(train_cases + val_cases)}"
    log = RunLog(paths.state_dir, rank == 0, settings, run_name)
    nodes = world // int(os.environ.get("LOCAL_WORLD_SIZE", world))
    log.message(f"world size {world}: {nodes} node(s) × {world // nodes} rank(s) on {device.type}")
    state = _resume_state(paths, fingerprint, log)
    if world > 1:
        dist.barrier()

    model_config = preset_config(settings.preset, n_classes, **settings.model)
    torch.manual_seed(settings.seed)
    model = VecSetAutoEncoder(model_config).to(device)
    items = settings.items.for_model(model_config)
    cache = cache_decision(settings.cache_samples, train_cases + val_cases)
    train_set = SampleDataset(train_cases, n_classes, items, train=True, seed=settings.seed, cache=cache)
    val_set = SampleDataset(val_cases, n_classes, items, train=False, seed=settings.seed, cache=cache)
    # Exponential moving average of the weights: validated, kept as "best", and what load_model returns.
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(settings.ema_decay)
    )
    objective = Objective(model, settings.weights, settings.eikonal_step, settings.n_eikonal).to(device)
    wrapped = DistributedDataParallel(objective) if world > 1 else objective
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    amp = device.type == "cuda"

    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=settings.seed)
    micro_per_epoch = math.ceil(len(sampler) / settings.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / settings.accum_steps)
    total_steps = settings.epochs * steps_per_epoch

    progress = Progress()
    if state is not None:
        model.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        ema.n_averaged.fill_(state["ema_updates"])
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(
            state["epoch"], state["step"], state["batch_in_epoch"], state["best_metric"], state["wandb_id"]
        )
        set_rng_state(state["rng"])
        log.message(f"resumed from {paths.state_dir / 'last.pt'}: epoch {progress.epoch}, step {progress.step}")
    log.start(progress, model_config)

    def checkpoint(name: str) -> None:
        if rank != 0:
            return
        save_checkpoint(
            paths.state_dir / f"{name}.pt",
            {
                "model_config": model_config.to_dict(),
                "settings": settings.to_dict(),
                "class_names": names,
                "model": model.state_dict(),
                "ema": ema.module.state_dict(),
                "ema_updates": int(ema.n_averaged),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"kind": "warmup_cosine", "step": progress.step, "total_steps": total_steps},
                "epoch": progress.epoch,
                "step": progress.step,
                "batch_in_epoch": progress.batch_in_epoch,
                "best_metric": progress.best_metric,
                "rng": rng_state(),
                "wandb_id": log.wandb_id,
                "fingerprint": fingerprint,
                "run_name": run_name,
            },
        )

    while progress.epoch < settings.epochs:
        epoch = progress.epoch
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        loader = DataLoader(
            train_set,
            batch_sampler=batches[progress.batch_in_epoch :],
            num_workers=settings.num_workers,
            pin_memory=device.type == "cuda",
        )
        sums: dict[str, float] = {}
        seen = 0
        started = time.perf_counter()
        bar = log.bar(total=steps_per_epoch, initial=progress.batch_in_epoch // settings.accum_steps, epoch=epoch)
        micro = progress.batch_in_epoch
        for batch in loader:
            batch = _to(batch, device)
            micro += 1
            boundary = micro % settings.accum_steps == 0 or micro == micro_per_epoch
            sync = contextlib.nullcontext() if boundary or world == 1 else wrapped.no_sync()
            with sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, terms = wrapped(batch)
                (loss / settings.accum_steps).backward()
            seen += 1
            for k, v in {"loss": loss.detach(), **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if not boundary:
                continue
            flags = _all_reduce(torch.tensor([float(stop.requested), float(not torch.isfinite(loss))], device=device))
            if flags[1] > 0:
                detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                raise NonFiniteLossError(
                    f"run {run_name}: loss became {float(loss)} at epoch {epoch}, step {progress.step} ({detail}); "
                    f"lower train.lr (now {settings.lr}) or check the sample files; the last good state is "
                    f"{paths.state_dir / 'last.pt'}"
                )
            lr = lr_at(progress.step, total_steps, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update_parameters(model)
            progress.step += 1
            progress.batch_in_epoch = micro
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr:.2e}")
            log.step(progress.step, {"train/loss": float(loss), "train/lr": lr, "train/grad_norm": float(grad_norm)})
            if flags[0] > 0:
                bar.close()
                checkpoint("last")
                log.message(
                    f"stop requested (SIGTERM/SIGUSR1): saved {paths.state_dir / 'last.pt'} at epoch {epoch}, "
                    f"step {progress.step}; rerun to resume"
                )
                log.finish()
                return PREEMPTED_EXIT
        bar.close()
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": progress.step,
            "lr": lr_at(max(progress.step - 1, 0), total_steps, settings),
            "seconds": round(time.perf_counter() - started, 3),
        }
        record |= {f"train_{k}": v / max(1, seen) for k, v in sums.items()}
        if world > 1:
            record["ddp_weight_spread"] = weight_spread(model)
        progress.epoch += 1
        progress.batch_in_epoch = 0
        if progress.epoch % settings.val_every == 0 or progress.epoch == settings.epochs:
            record |= summarise_validation(
                evaluate(ema.module, val_set, rank, world, device, amp), names, settings.thin_structures
            )
            if record["val_mean_iou"] > progress.best_metric:
                progress.best_metric = record["val_mean_iou"]
                record["best"] = True
        checkpoint("last")
        if record.get("best") and rank == 0:
            copy_atomic(paths.state_dir / "last.pt", paths.state_dir / "best.pt")  # the same state: save once
        log.epoch(record)
    if rank == 0:
        if not (paths.state_dir / "best.pt").exists():
            copy_atomic(paths.state_dir / "last.pt", paths.state_dir / "best.pt")
        copy_atomic(paths.state_dir / "best.pt", paths.checkpoint_best)
        copy_atomic(paths.state_dir / "last.pt", paths.checkpoint_last)
        copy_atomic(log.metrics_path, paths.metrics)
    log.finish()
    if world > 1:
        dist.barrier()
    return 0


def load_model(checkpoint_path: Path, device: str | torch.device = "cpu") -> tuple[VecSetAutoEncoder, dict[str, Any]]:
    """The model of a checkpoint (its weight average, in eval mode) and the checkpoint dict."""
    state = load_checkpoint(checkpoint_path)
    model = VecSetAutoEncoder(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["ema"])
    return model.to(device).eval(), state
