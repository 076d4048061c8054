"""A run's plan: its resolved settings and what they imply, as one file (results/train/{run}/settings.json).

The ``plan`` rule writes it from the config; training, evaluation and encoding read it and nothing else of
the config. A change to a run's settings changes this file's content, and that is what reruns training.
Besides the settings it records the structures (class order), the run's fold and seed, the resolved model,
the number of cases, and what follows: parameter count, world size, effective batch, steps per epoch and
in all (``steps_per_epoch`` is also what the trainer counts with).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecset.atomic import write_bytes_atomic
from vecset.data.split import read_split_csv
from vecset.settings import ModelConfig, RunSettings, TrainSettings, as_dict, build

PLAN_FORMAT = 1


def micro_batches_per_epoch(n_train: int, world_size: int, batch_size: int) -> int:
    """Micro-batches each rank runs in one epoch: it sees ceil(n_train / world) cases (DistributedSampler pads)."""
    return math.ceil(math.ceil(n_train / world_size) / batch_size)


def steps_per_epoch(n_train: int, world_size: int, batch_size: int, accum_steps: int) -> int:
    """Optimizer steps in one epoch: accum_steps micro-batches per step, a short last step included."""
    return math.ceil(micro_batches_per_epoch(n_train, world_size, batch_size) / accum_steps)


def run_length(max_steps: int | None, epochs: int, steps_per_epoch: int) -> int:
    """A run's length in optimizer steps: max_steps (when set), or epochs × steps per epoch."""
    return max_steps or epochs * steps_per_epoch


@dataclass(frozen=True)
class RunPlan:
    """Everything training, evaluation and encoding need to know about a run."""

    run: str
    fold: int | None
    seed: int
    class_names: tuple[str, ...]
    train: TrainSettings
    model: ModelConfig
    train_cases: int
    val_cases: int
    parameters: int
    flops_per_sample: int

    @property
    def world_size(self) -> int:
        return self.train.resources.world_size

    @property
    def effective_batch(self) -> int:
        """Cases per optimizer step over all ranks."""
        return self.train.batch_size * self.train.accum_steps * self.world_size

    @property
    def micro_batches_per_epoch(self) -> int:
        return micro_batches_per_epoch(self.train_cases, self.world_size, self.train.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        t = self.train
        return steps_per_epoch(self.train_cases, self.world_size, t.batch_size, t.accum_steps)

    @property
    def total_steps(self) -> int:
        """The run's length in optimizer steps (:func:`run_length`)."""
        return run_length(self.train.max_steps, self.train.epochs, self.steps_per_epoch)

    @property
    def checkpoint_bytes(self) -> int:
        """Size of state/last.pt: weights, their average and AdamW's two moments, fp32 (best.pt: a quarter)."""
        return 4 * 4 * self.parameters

    def implied(self) -> dict[str, int | str]:
        """The numbers that follow from the settings, as written to the plan file: among them what
        ``num_workers: null`` resolves to on the planned ranks (DataLoader workers and torch threads per rank)."""
        t, gpu = self.train, self.train.gpu_ranks
        return {
            "parameters": self.parameters,
            "flops_per_sample": self.flops_per_sample,
            "checkpoint_bytes": self.checkpoint_bytes,
            "nodes": self.train.resources.nodes,
            "ranks_per_node": self.train.resources.ranks_per_node,
            "world_size": self.world_size,
            "rank_device": "cuda" if gpu else "cpu",
            "loader_workers_per_rank": t.loader_workers(gpu),
            "torch_threads_per_rank": t.torch_threads(gpu),
            "effective_batch": self.effective_batch,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
        }

    def to_json(self) -> str:
        values = {
            "format": PLAN_FORMAT,
            "run": self.run,
            "fold": self.fold,
            "seed": self.seed,
            "class_names": list(self.class_names),
            "data": {"train_cases": self.train_cases, "val_cases": self.val_cases},
            "implied": self.implied(),
            "train": as_dict(self.train),
            "model": as_dict(self.model),
        }
        return json.dumps(values | {"sha256": _content_digest(values)}, indent=1) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> RunPlan:
        """The plan in ``path``. One that is unreadable, of another format, or not as the plan rule wrote it
        (edited by hand: its digest no longer matches) is refused in one line naming the fix; the plan rule
        rewrites a deleted one from the config."""
        fix = f"delete it and rerun the workflow, which writes it again from the config (rm {path})"
        try:
            values: dict[str, Any] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable run plan ({type(err).__name__}); {fix}") from None
        if not isinstance(values, dict) or values.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path}: not a run plan of format {PLAN_FORMAT}; {fix}")
        stored = values.pop("sha256", None)
        if stored != _content_digest(values):
            raise ValueError(f"{path}: changed since the plan rule wrote it (its sha256 does not match); {fix}")
        try:
            return cls._from_values(values)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a complete run plan ({type(err).__name__}: {err}); {fix}") from None

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> RunPlan:
        return cls(
            run=values["run"],
            fold=values["fold"],
            seed=values["seed"],
            class_names=tuple(values["class_names"]),
            train=build(TrainSettings, values["train"]),
            model=build(ModelConfig, values["model"]),
            train_cases=values["data"]["train_cases"],
            val_cases=values["data"]["val_cases"],
            parameters=values["implied"]["parameters"],
            flops_per_sample=values["implied"]["flops_per_sample"],
        )


def _content_digest(values: dict[str, Any]) -> str:
    """sha256 of a plan's values in canonical JSON: what tells a plan the rule wrote from one edited by hand."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def model_cost(model: ModelConfig, train: TrainSettings) -> tuple[int, int]:
    """(parameters, FLOPs of one training item's forward and backward), counted on the meta device: no
    memory, no weights, no arithmetic. The item: n_input encoder points; n_vol + n_near + n_surface_loss
    queries plus the eikonal stencil's six per point."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vecset.model.vecset import VecSetAutoEncoder, count_parameters

    items = train.items
    queries = items.n_vol + items.n_near + items.n_surface_loss + 6 * train.n_eikonal
    with torch.device("meta"):
        autoencoder = VecSetAutoEncoder(model)
        surface = torch.zeros(1, items.n_input, 3 + model.n_classes)
        latent_points = torch.zeros(1, model.n_latents, 3 + model.n_classes) if model.fps_latents else None
        with FlopCounterMode(display=False) as counter:
            autoencoder(surface, torch.zeros(1, queries, 3), latent_points)[0].sum().backward()
    return count_parameters(autoencoder), int(counter.get_total_flops())


def make_plan(run: RunSettings, seed: int, class_names: list[str], train_cases: int, val_cases: int) -> RunPlan:
    """The plan of ``run`` for these structures and case counts; its seed is the run's ``train.seed`` when set,
    else ``seed``."""
    model = run.train.model_config(len(class_names))
    parameters, flops = model_cost(model, run.train)
    return RunPlan(
        run=run.name,
        fold=run.fold,
        seed=seed if run.train.seed is None else run.train.seed,
        class_names=tuple(class_names),
        train=run.train,
        model=model,
        train_cases=train_cases,
        val_cases=val_cases,
        parameters=parameters,
        flops_per_sample=flops,
    )


def write_plan(
    run: RunSettings, seed: int, class_names: list[str], train_csv: str | Path, val_csv: str | Path, out: str | Path
) -> RunPlan:
    """Write the plan of ``run`` over the cases of its split CSVs to ``out`` (atomically); returns it."""
    plan = make_plan(run, seed, class_names, len(read_split_csv(Path(train_csv))), len(read_split_csv(Path(val_csv))))
    write_bytes_atomic(out, plan.to_json().encode())
    return plan
