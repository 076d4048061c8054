"""Distributed, resumable training of one run (``torchrun`` starts one process per rank; vecset.train.run).

State lives in the run's state folder, never a declared workflow output, so a failed or requeued job keeps
it: ``last.pt`` after every epoch, ``best.pt`` on validation improvement, ``metrics.jsonl``, TensorBoard and
wandb folders. A start resumes from ``last.pt`` when its fingerprint (settings and data) matches, and moves
an older run's state to ``previous/`` otherwise. A stop request (vecset.preemption) ends the run after the
next optimizer step with the state saved and exit status PREEMPTED_EXIT. When every epoch is done, the
declared outputs are copied from the state folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from vecset.atomic import copy_atomic
from vecset.model.checkpoint import load_checkpoint
from vecset.model.items import SampleDataset, cache_decision
from vecset.plan import RunPlan
from vecset.preemption import PREEMPTED_EXIT, StopRequest
from vecset.train import distributed
from vecset.train.loop import summarise_validation, train_one_epoch, validate
from vecset.train.objective import Objective
from vecset.train.run_log import RunLog
from vecset.train.state import RunState, fingerprint


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its resumable state, and the declared outputs written when it ends."""

    state_dir: Path
    out_dir: Path

    @property
    def last(self) -> Path:
        return self.state_dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.state_dir / "best.pt"


def train(
    plan: RunPlan, train_cases: list[tuple[str, Path]], val_cases: list[tuple[str, Path]], paths: RunPaths
) -> int:
    """Train (or resume, or just finish) one run; the exit status: 0 done, PREEMPTED_EXIT stopped and saved."""
    t = plan.train
    with distributed.ranks(t.device, t.resources.threads_per_rank) as ranks:
        check_world(plan, ranks)
        stop = StopRequest()
        log = RunLog(paths.state_dir, ranks.is_main, plan)
        log.message(ranks.describe())
        run = RunState(plan, fingerprint(plan, train_cases + val_cases), ranks.device)
        resume(run, paths, log)
        train_set, val_set = datasets(plan, train_cases, val_cases)
        sampler: DistributedSampler[int] = DistributedSampler(train_set, ranks.world, ranks.rank, seed=plan.seed)
        objective = Objective(run.model, t.weights, t.eikonal_step, t.n_eikonal).to(ranks.device)
        step_fn = DistributedDataParallel(objective) if ranks.world > 1 else objective
        log.start(run.progress)
        while run.progress.epoch < t.epochs:
            epoch = train_one_epoch(run, step_fn, train_set, sampler, ranks, stop, log)
            if epoch.stopped:
                return stopped(run, paths, log)
            end_epoch(run, epoch.record, val_set, ranks, paths, log)
        finish(run, paths, log)
        return 0


def check_world(plan: RunPlan, ranks: distributed.Ranks) -> None:
    """The plan's step counts (lr schedule, accumulation) assume its world size: refuse any other."""
    if ranks.world != plan.world_size:
        r = plan.train.resources
        raise ValueError(
            f"run {plan.run} is planned for {plan.world_size} rank(s) ({r.nodes} node(s) × {r.ranks_per_node}), "
            f"but torchrun started {ranks.world}; set train.resources (gpus or cpu_ranks, nodes) to match"
        )


def datasets(
    plan: RunPlan, train_cases: list[tuple[str, Path]], val_cases: list[tuple[str, Path]]
) -> tuple[SampleDataset, SampleDataset]:
    """The training items (random, balanced) and the validation items (fixed) of a run."""
    cache = cache_decision(plan.train.cache_samples, train_cases + val_cases)
    n_classes, items, n_latents = len(plan.class_names), plan.train.items, plan.model.fps_latents
    return (
        SampleDataset(train_cases, n_classes, items, True, n_latents, seed=plan.seed, cache=cache),
        SampleDataset(val_cases, n_classes, items, False, n_latents, seed=plan.seed, cache=cache),
    )


def resume(run: RunState, paths: RunPaths, log: RunLog) -> None:
    """Continue from ``state/last.pt`` when it is this run's; otherwise (rank 0) move the old state aside."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(paths.last) if paths.last.exists() else None
    if state is not None and state.get("fingerprint") != run.fingerprint and log.is_main:
        previous = paths.state_dir / "previous"
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir(parents=True)
        for name in ("last.pt", "best.pt", "metrics.jsonl"):
            if (paths.state_dir / name).exists():
                os.replace(paths.state_dir / name, previous / name)
        log.message(
            f"state in {paths.state_dir} is from other settings or data "
            f"({state.get('fingerprint')} != {run.fingerprint}); starting fresh, old state moved to {previous}"
        )
    distributed.barrier()
    if state is not None and state.get("fingerprint") == run.fingerprint:
        run.restore(state)
        log.message(f"resumed from {paths.last}: epoch {run.progress.epoch}, step {run.progress.step}")


def end_epoch(
    run: RunState, record: dict, val_set: SampleDataset, ranks: distributed.Ranks, paths: RunPaths, log: RunLog
) -> None:
    """Close a finished epoch: validate when due, save ``last`` (and ``best`` on improvement), log its record."""
    progress, t = run.progress, run.plan.train
    progress.epoch += 1
    progress.batch_in_epoch = 0
    if progress.epoch % t.val_every == 0 or progress.epoch == t.epochs:
        record |= summarise_validation(
            validate(run.ema.module, val_set, ranks), list(run.plan.class_names), t.thin_structures
        )
        if record["val_mean_iou"] > progress.best_metric:
            progress.best_metric = record["val_mean_iou"]
            record["best"] = True
    if ranks.is_main:
        run.save(paths.last)
        if record.get("best"):
            copy_atomic(paths.last, paths.best)  # the same state: saved once, copied
    log.epoch(record)


def stopped(run: RunState, paths: RunPaths, log: RunLog) -> int:
    """A stop request: rank 0 saves where the run is; every rank exits with PREEMPTED_EXIT."""
    if log.is_main:
        run.save(paths.last)
    log.message(
        f"stop requested (SIGTERM/SIGUSR1): saved {paths.last} at epoch {run.progress.epoch}, "
        f"step {run.progress.step}; rerun to resume"
    )
    log.finish()
    return PREEMPTED_EXIT


def finish(run: RunState, paths: RunPaths, log: RunLog) -> None:
    """Every epoch done: copy best, last and the metrics log to the declared outputs (rank 0)."""
    if log.is_main:
        if not paths.best.exists():
            copy_atomic(paths.last, paths.best)
        copy_atomic(paths.best, paths.out_dir / "checkpoint-best.pt")
        copy_atomic(paths.last, paths.out_dir / "checkpoint-last.pt")
        copy_atomic(log.metrics_path, paths.out_dir / "metrics.jsonl")
    log.finish()
    distributed.barrier()
