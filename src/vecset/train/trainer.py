"""Distributed, resumable training of one run (``torchrun`` starts one process per rank; vecset.train.run).

State lives in the run's state folder, never a declared workflow output, so a failed or requeued job keeps
it: ``last.pt`` (everything a restart needs) every ``checkpoint_minutes``, on a stop request and at the end;
``best.pt`` (what inference needs) on validation improvement; ``metrics.jsonl``, TensorBoard and wandb
folders. A start resumes from ``last.pt`` when its fingerprint (settings and data) matches, and keeps an
older run's state in ``previous/`` otherwise (vecset.train.kept_states). The run's length, warmup and
validation are counted in optimizer steps. A stop request (vecset.preemption) ends the run after the next
optimizer step: rank 0 saves, every rank waits for that save, and all exit with PREEMPTED_EXIT. When every
step is done, the declared outputs are copied from the state folder.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from vecset.atomic import copy_atomic, link_atomic, remove_leftover_temps, remove_leftover_temps_of
from vecset.model.checkpoint import CheckpointError, load_checkpoint
from vecset.model.items import SampleDataset, read_case
from vecset.plan import RunPlan, run_length
from vecset.preemption import PREEMPTED_EXIT, StopRequest
from vecset.settings import TrainSettings, as_dict
from vecset.train import distributed, kept_states
from vecset.train.loop import (
    EpochMeter,
    NonFiniteLossError,
    StepOutcome,
    lr_at,
    summarise_validation,
    train_step,
    training_batches,
    validate,
)
from vecset.train.objective import Objective
from vecset.train.run_log import RunLog
from vecset.train.state import RESUMABLE_KEYS, RunState, fingerprint
from vecset.train.state_lock import StateInUseError, state_lock


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

    @property
    def outputs(self) -> dict[str, Path]:
        """The declared outputs (best, last, metrics) in the run's folder, copied from the state when it ends."""
        names = {"best": "checkpoint-best.pt", "last": "checkpoint-last.pt", "metrics": "metrics.jsonl"}
        return {key: self.out_dir / name for key, name in names.items()}


def train(
    plan: RunPlan, train_cases: list[tuple[str, Path]], val_cases: list[tuple[str, Path]], paths: RunPaths
) -> int:
    """Train (or resume, or just finish) one run; the exit status: 0 done, PREEMPTED_EXIT stopped and saved."""
    t = plan.train
    with distributed.ranks(t.device) as ranks, exclusive_state(paths.state_dir, ranks, list(paths.outputs.values())):
        check_world(plan, ranks)
        gpu = ranks.device.type == "cuda"
        torch.set_num_threads(t.torch_threads(gpu))
        stop = StopRequest()
        log = RunLog(paths.state_dir, ranks.is_main, plan)
        log.message(
            f"{ranks.describe()}, {t.loader_workers(gpu)} loader worker(s) and {t.torch_threads(gpu)} thread(s) each"
        )
        run = RunState(plan, run_fingerprint(plan, train_cases + val_cases, paths, ranks), ranks.device)
        resume(run, paths, log)
        log.repair(run.progress.step)
        train_set, val_set = datasets(plan, train_cases, val_cases)
        objective = objective_for(run, ranks)
        saver = LastSaver(run, paths.last, log)
        log.start(run.progress)
        unfinished = run.progress.step < plan.total_steps
        if unfinished and train_steps(run, objective, (train_set, val_set), ranks, stop, saver, paths):
            return stopped(saver, log, ranks, stop)
        finish(saver, paths, log)
        return 0


@contextlib.contextmanager
def exclusive_state(state_dir: Path, ranks: distributed.Ranks, outputs: Sequence[Path] = ()) -> Iterator[None]:
    """Rank 0 holds the state folder's lock (vecset.train.state_lock) for the run, and under it removes the temp
    files killed saves left in the state folder and beside the declared ``outputs``; when another trainer holds
    it, every rank stops with StateInUseError before touching the state."""
    with contextlib.ExitStack() as stack:
        refused: StateInUseError | None = None
        if ranks.is_main:
            try:
                stack.enter_context(state_lock(state_dir))
                # A killed save's temp file: 7 GB at the upstream size, in the state or beside an output.
                freed = remove_leftover_temps(state_dir) + remove_leftover_temps_of(outputs)
                if freed:
                    where = f"{state_dir} and beside the run's outputs" if outputs else str(state_dir)
                    print(f"removed {freed / 1e9:.2f} GB of temp files that killed saves left in {where}",
                          file=sys.stderr, flush=True)  # fmt: skip
            except StateInUseError as err:
                refused = err
        if distributed.all_reduce(torch.full((), float(refused is not None), device=ranks.device)).item() > 0:
            raise refused or StateInUseError(f"{state_dir} is in use by another trainer (rank 0 says which)")
        yield


def train_steps(
    run: RunState,
    objective: Objective | DistributedDataParallel,
    data: tuple[SampleDataset, SampleDataset],
    ranks: distributed.Ranks,
    stop: StopRequest,
    saver: LastSaver,
    paths: RunPaths,
) -> bool:
    """Optimizer steps until the plan's last or a stop request (then True): an epoch's record at its end,
    validation every val_every_steps and at the last step, last.pt when the clock says."""
    plan, log = run.plan, saver.log
    meter, bar = EpochMeter(ranks.device), log.bar(total=plan.total_steps, initial=run.progress.step)
    with training_batches(data[0], run, ranks) as batches, contextlib.closing(bar):
        while run.progress.step < plan.total_steps:
            try:
                outcome = train_step(run, objective, batches, ranks, stop, meter)
            except NonFiniteLossError as err:
                files = [str(data[0].cases[i][1]) for i in err.indices]
                raise NonFiniteLossError(f"{err}: {files}", err.indices) from None
            after_step(run, outcome, bar, log)
            last = run.progress.step == plan.total_steps
            record = {}  # one metrics line per epoch; a validation inside an epoch gets its own
            if outcome.epoch_done or last:
                record = meter.record(run.progress.epoch_number, run.progress.step, outcome_lr(run), ranks.world)
                meter = EpochMeter(ranks.device)
            if run.progress.step % plan.train.val_every_steps == 0 or last:
                record = validate_now(run, data[1], ranks, paths) | record
            if record:
                log.record(record)
            if outcome.stopped and not last:  # a stop at the last step just finishes
                return True
            saver.save_when_due()
    return False


def after_step(run: RunState, outcome: StepOutcome, bar: Any, log: RunLog) -> None:
    """The step's progress bar and TensorBoard/wandb scalars (rank 0)."""
    lr = outcome_lr(run)
    bar.update(1)
    bar.set_postfix(loss=f"{outcome.loss:.4f}", lr=f"{lr:.2e}", epoch=run.progress.epoch_number)
    log.step(run.progress.step, {"train/loss": outcome.loss, "train/lr": lr})


def outcome_lr(run: RunState) -> float:
    """The learning rate of the step just taken."""
    return lr_at(max(run.progress.step - 1, 0), run.plan.total_steps, run.plan.train)


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
    n_classes, items = len(plan.class_names), plan.train.items
    return (
        SampleDataset(train_cases, n_classes, items, True, seed=plan.seed),
        SampleDataset(val_cases, n_classes, items, False, seed=plan.seed),
    )


def structure_weights(class_names: Sequence[str], train: TrainSettings) -> torch.Tensor | None:
    """(C,) loss weight of each structure: ``weights.thin`` for ``thin_structures``, 1 for the others; None when
    all are 1 (the unweighted means)."""
    if train.weights.thin == 1.0:
        return None
    thin = set(train.thin_structures)
    return torch.tensor([train.weights.thin if name in thin else 1.0 for name in class_names])


def objective_for(run: RunState, ranks: distributed.Ranks) -> Objective | DistributedDataParallel:
    """The training objective as the step calls it: TF32 matmuls on CUDA, activation checkpointing and
    torch.compile as the settings say, DDP in a process group (several ranks, or one joined by the caller)."""
    t = run.plan.train
    if ranks.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run.model.activation_checkpointing = t.activation_checkpointing
    objective = Objective(
        run.model, t.weights, t.eikonal_step, t.n_eikonal, t.items.n_vol, structure_weights(run.plan.class_names, t)
    ).to(ranks.device)
    if t.compile:
        objective.compile()
    # Gradients as views into DDP's buckets: no second copy of them (1.7 GB per GPU at the upstream size).
    ddp = ranks.world > 1 or distributed.joined()
    return DistributedDataParallel(objective, gradient_as_bucket_view=True) if ddp else objective


def run_fingerprint(plan: RunPlan, cases: list[tuple[str, Path]], paths: RunPaths, ranks: distributed.Ranks) -> str:
    """The run's fingerprint: rank 0 checks and hashes the sample files that changed since
    state/data_digests.json and records them; the other ranks then read the record instead of hashing every
    file again. A bad sample file stops the run here, before any state is moved aside."""
    recorded = paths.state_dir / "data_digests.json"
    if ranks.is_main:
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        n_classes = len(plan.class_names)
        value = fingerprint(plan, cases, recorded, check=lambda case, path: read_case(path, n_classes, case))
    distributed.barrier()
    return value if ranks.is_main else fingerprint(plan, cases, recorded, update=False)


STATE_FILES = ("last.pt", "best.pt", "metrics.jsonl")


def read_last(paths: RunPaths) -> dict[str, Any] | None:
    """``state/last.pt``, or None when there is none; an unreadable one is named with its fix."""
    if not paths.last.exists():
        return None
    try:
        return load_checkpoint(paths.last)
    except CheckpointError as err:
        raise ValueError(
            f"{paths.last} is unreadable ({err.problem}); move it away to start the run over "
            f"(mv {paths.last} {paths.last}.unreadable), or put back a good copy"
        ) from None


def resume(run: RunState, paths: RunPaths, log: RunLog) -> None:
    """Continue from ``state/last.pt`` when it is this run's. Otherwise rank 0 first keeps the state that is
    there (vecset.train.kept_states: a new folder in ``previous/``, never overwriting one), then brings back the
    furthest kept state of this fingerprint (settings changed and changed back, or a changed sample file put
    back), then prunes the kept states to ``train.keep_states``. A state saved by another number of ranks is
    refused: its batch position and schedule would not carry."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    state = read_last(paths)
    mine = state is not None and state.get("fingerprint") == run.fingerprint
    if not mine and log.is_main:
        switch_generation(run, state, paths, log)
    distributed.barrier()
    state = state if mine else read_last(paths)
    if state is not None and state.get("fingerprint") == run.fingerprint:
        saved_world = state.get("world_size", run.world_size)
        if saved_world != run.world_size:
            raise ValueError(
                f"run {run.plan.run}: {paths.last} was saved by {saved_world} rank(s) and this job has "
                f"{run.world_size}; its batch position and effective batch do not carry over. Set "
                f"train.resources back to {saved_world} rank(s) to resume, or move {paths.state_dir} away to start over"
            )
        run.restore(state)
        log.message(f"resumed from {paths.last}: epoch {run.progress.epoch}, step {run.progress.step}")
        if changed := schedule_change(state.get("settings", {}), run):
            log.message(changed)


def schedule_change(saved: dict[str, Any], run: RunState) -> str:
    """What a changed run length does to the learning rate on resume ('' when the length is the same): the cosine
    stretches to the new end, so the rate at the current step moves."""
    plan, step = run.plan, run.progress.step
    before = run_length(saved.get("max_steps", 0), saved.get("epochs", plan.train.epochs), plan.steps_per_epoch)
    if before == plan.total_steps:
        return ""
    old, new = lr_at(step, before, plan.train), lr_at(step, plan.total_steps, plan.train)
    return (
        f"run length {before} → {plan.total_steps} steps: the cosine schedule now ends at step {plan.total_steps}, "
        f"so the learning rate at step {step} goes from {old:.3g} to {new:.3g}"
    )


def switch_generation(run: RunState, state: dict[str, Any] | None, paths: RunPaths, log: RunLog) -> None:
    """Keep the state of other settings or data that is in the state folder, bring back this fingerprint's
    kept state if there is one, and prune the kept states to the cap, logging each move and the total."""
    here = paths.state_dir
    if state is not None:
        old = str(state.get("fingerprint"))
        label = kept_states.difference_label(
            {**state.get("settings", {}), "model": state.get("model_config"), "class_names": state.get("class_names")},
            {**as_dict(run.plan.train), "model": as_dict(run.plan.model), "class_names": list(run.plan.class_names)},
            RESUMABLE_KEYS,
            old.split("-")[-1] != run.fingerprint.split("-")[-1],
        )
        kept = kept_states.keep(here, STATE_FILES, old, int(state.get("step", -1)), label)
        log.message(
            f"state in {here} is from other settings or data ({old} != {run.fingerprint}); kept it as {kept.describe()}"
        )
    else:
        leftovers = [name for name in STATE_FILES if (here / name).exists()]
        if leftovers:  # a start that failed before its first save: nothing to resume from
            log.message(f"{', '.join(leftovers)} in {here} belong to a start that saved no last.pt; replaced")
    earlier = kept_states.find_kept(here, run.fingerprint)
    if earlier is not None:
        kept_states.bring_back(earlier, here, STATE_FILES)
        log.message(f"these settings and data were trained before: continuing from the state kept in {earlier.folder}")
    else:
        for name in STATE_FILES:
            (here / name).unlink(missing_ok=True)
        log.message("starting fresh")
    limit = run.plan.train.keep_states
    for removed in kept_states.prune(here, limit):
        log.message(f"removed the kept state {removed}: more than train.keep_states={limit} are kept")
    count, size = kept_states.total_bytes(here)
    if count:
        log.message(
            f"{count} kept state(s), {size / 1e9:.2f} GB in total, in {here / kept_states.PREVIOUS} "
            f"(train.keep_states: {limit})"
        )


def validate_now(run: RunState, val_set: SampleDataset, ranks: distributed.Ranks, paths: RunPaths) -> dict[str, Any]:
    """Score the weight average; on improvement rank 0 saves it as ``best.pt``; the validation record."""
    progress, t = run.progress, run.plan.train
    result = validate(run.averaged, val_set, ranks)
    record: dict[str, Any] = {"epoch": progress.epoch_number, "step": progress.step}
    record |= summarise_validation(result, list(run.plan.class_names), t.thin_structures)
    if ranks.world > 1:
        record["ddp_weight_spread"] = distributed.weight_spread(run.model)
    if record["val_mean_iou"] > progress.best_metric:
        progress.best_metric = record["val_mean_iou"]
        record["best"] = True
        if ranks.is_main:
            run.save_inference(paths.best)
    return record


class LastSaver:
    """Rank 0 saves ``state/last.pt`` every ``checkpoint_minutes``, on a stop and at the end, never twice at
    one step; the other ranks go on (a periodic save) or wait at a barrier (a stop, the end)."""

    def __init__(self, run: RunState, path: Path, log: RunLog) -> None:
        self.run, self.path, self.log = run, path, log
        self.interval_s = 60.0 * run.plan.train.checkpoint_minutes
        self.saved_step = run.progress.step if path.exists() else -1
        self.since = time.monotonic()

    def save_when_due(self) -> None:
        if time.monotonic() - self.since >= self.interval_s:
            self.save(f"every {self.run.plan.train.checkpoint_minutes:g} min")

    def save(self, why: str) -> None:
        if self.log.is_main and self.run.progress.step != self.saved_step:
            started = time.perf_counter()
            self.run.save(self.path)
            seconds = time.perf_counter() - started
            self.log.message(f"saved {self.path} at step {self.run.progress.step} ({why}, {seconds:.1f} s)")
            self.log.step(self.run.progress.step, {"checkpoint/save_seconds": seconds})
        self.saved_step, self.since = self.run.progress.step, time.monotonic()


def stopped(saver: LastSaver, log: RunLog, ranks: distributed.Ranks, stop: StopRequest) -> int:
    """A stop request: rank 0 saves where the run is, every rank waits for that save, all exit PREEMPTED_EXIT."""
    saver.save("stop requested")
    received = distributed.gather(stop.received)  # after rank 0's save: the other ranks wait here for it
    p = saver.run.progress
    why = f"{'/'.join(stop.received)} received here" if stop.received else "asked by another rank"
    print(
        f"rank {ranks.rank} on {ranks.host}: stopped at step {p.step} after rank 0's save ({why})",
        file=sys.stderr,
        flush=True,
    )
    log.message(f"stop requested ({signals_reached(received, ranks)}): saved {saver.path} at epoch {p.epoch}, "
                f"step {p.step}; rerun to resume")  # fmt: skip
    log.finish()
    return PREEMPTED_EXIT


def signals_reached(received: Sequence[tuple[str, ...]], ranks: distributed.Ranks) -> str:
    """Which ranks a stop signal reached, by host: ``SIGUSR1 reached vn1: rank 0; vn2: rank 1`` (and which it did
    not: they stopped because another rank asked); ``received``: each rank's signal names."""
    hosts = ranks.hosts or tuple(ranks.host for _ in received)
    names = sorted({name for names in received for name in names})
    reached = {r for r, name in enumerate(received) if name}
    text = f"{'/'.join(names) or 'a signal'} reached {distributed.ranks_by_host(hosts, reached)}"
    if len(reached) < len(received):
        text += f"; not {distributed.ranks_by_host(hosts, set(range(len(received))) - reached)}"
    return text


def finish(saver: LastSaver, paths: RunPaths, log: RunLog) -> None:
    """Every step done: rank 0 saves last (and best, if no validation improved), then links best and last and
    copies the metrics log (appended to if the run is extended) to the declared outputs; every rank waits."""
    saver.save("end of training")
    if log.is_main:
        if not paths.best.exists():
            saver.run.save_inference(paths.best)
        link_atomic(paths.best, paths.outputs["best"])  # state files are replaced whole, never written in place
        link_atomic(paths.last, paths.outputs["last"])  # 7 GB at the upstream size: a link, not a copy
        copy_atomic(log.metrics_path, paths.outputs["metrics"])
    log.finish()
    distributed.barrier()
