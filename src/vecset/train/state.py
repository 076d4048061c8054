"""The state a run carries from step to step and across restarts, and how it is saved and restored.

:class:`RunState` holds the model, its exponential moving average (validated, saved as best, and what
``load_model`` returns), the optimizer and the :class:`Progress` counters. ``checkpoint()`` is the dict that
goes into ``state/last.pt``; ``restore()`` puts one back, RNG states included, so a resumed run continues
exactly where it stopped. A checkpoint is only resumed when its fingerprint (the settings that change what
training computes, and the data) matches the run's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vecset.atomic import write_bytes_atomic
from vecset.model.checkpoint import save_checkpoint
from vecset.model.vecset import VecSetAutoEncoder
from vecset.plan import RunPlan
from vecset.settings import TrainSettings, as_dict

# Changing these does not invalidate a run's state: more epochs or steps extend it, the rest is bookkeeping
# or how the same computation is run. A different world size is refused by the trainer, by name.
RESUMABLE_KEYS = (
    "epochs",
    "max_steps",
    "val_every_steps",
    "checkpoint_minutes",
    "keep_states",
    "num_workers",
    "compile",
    "activation_checkpointing",
    "wandb",
    "tensorboard",
    "progress",
    "resources",
)


CaseCheck = Callable[[str, Path], object]


def file_digests(
    cases: list[tuple[str, Path]], recorded: Path | None = None, update: bool = True, check: CaseCheck | None = None
) -> dict[str, str]:
    """SHA-256 of each case's sample file, by case id. Files whose size and modification time match the
    digests ``recorded`` (a JSON file) are not read again; the rest are first checked with ``check(case,
    path)`` (which raises for a bad file), then hashed and, with ``update``, the file is rewritten
    (atomically). A touched or copied file with the same bytes keeps its digest."""
    known: dict[str, list] = {}
    if recorded is not None and recorded.exists():
        try:
            known = json.loads(recorded.read_text())
        except ValueError:
            known = {}  # unreadable: hash again
        if not isinstance(known, dict) or not all(isinstance(v, list) for v in known.values()):
            known = {}  # not a record of this shape (edited by hand): hash again
    digests, table, changed = {}, {}, False
    for case, path in sorted(cases):
        stat = Path(path).stat()
        key = [str(path), stat.st_size, stat.st_mtime_ns]
        entry = known.get(case)
        if entry is not None and entry[:3] == key:
            digests[case] = entry[3]
        else:
            if check is not None:
                check(case, Path(path))
            with open(path, "rb") as fh:
                digests[case] = hashlib.file_digest(fh, "sha256").hexdigest()
            changed = True
        table[case] = [*key, digests[case]]
    if recorded is not None and update and (changed or set(known) != set(table)):
        write_bytes_atomic(recorded, json.dumps(table, indent=0).encode())
    return digests


def fingerprint(
    plan: RunPlan,
    cases: list[tuple[str, Path]],
    recorded: Path | None = None,
    update: bool = True,
    check: CaseCheck | None = None,
) -> str:
    """What a resumable state must match: every setting that changes what training computes, and the data
    (the sample files' contents, vecset.train.state.file_digests, each new file checked first)."""
    # train.seed enters as plan.seed, the seed in effect: naming the top-level seed there changes nothing.
    settings = {k: v for k, v in as_dict(plan.train).items() if k not in RESUMABLE_KEYS and k != "seed"}
    settings |= {"seed": plan.seed, "model": as_dict(plan.model), "class_names": list(plan.class_names)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    digests = file_digests(cases, recorded, update, check)
    data = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]
    return f"{digest}-{data}"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states in weights_only-safe types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (libraries may use the global one)
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    legacy = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    np.random.set_state(legacy)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """Where a run is: finished epochs, optimizer steps, micro-batches done in the current epoch, best metric."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -math.inf
    wandb_id: str | None = None

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, micro-batches done in it): where the run's batches continue."""
        return self.epoch, self.batch_in_epoch

    @property
    def epoch_number(self) -> int:
        """The 1-based epoch a record made now belongs to: the one under way, or the one just finished."""
        return self.epoch + 1 if self.batch_in_epoch else max(self.epoch, 1)


class WeightAverage:
    """An exponential moving average of a model's parameters (``module``), updated without a host sync: the
    update count is a Python int, not a tensor read every step (torch's AveragedModel reads its device counter
    twice per update). The first update copies; update n moves each average towards the model by 1 - d_n, with
    d_n = min(decay, (1 + n) / (10 + n)): the average forgets its start within about ten times n updates instead
    of keeping the initial weights (at 0.9999 they would still weigh 82 % after 2000 steps)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @property
    def decay_now(self) -> float:
        """The decay of the next update: warmed up from 0.18 towards ``decay``."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        averages: list[torch.Tensor] = list(self.module.parameters())
        current: list[torch.Tensor] = [p.detach() for p in model.parameters()]
        if self.updates == 0:
            torch._foreach_copy_(averages, current)
        else:
            torch._foreach_lerp_(averages, current, 1.0 - self.decay_now)
        self.updates += 1


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], train: TrainSettings, device: torch.device
) -> torch.optim.AdamW:
    """The run's AdamW (peak lr, beta2, weight decay), fused on CUDA: one kernel for all parameters instead of a
    loop over ~400 tensors."""
    return torch.optim.AdamW(
        parameters,
        lr=train.lr,
        betas=(0.9, train.adam_beta2),
        weight_decay=train.weight_decay,
        fused=device.type == "cuda",
    )


class RunState:
    """Model, weight average, optimizer and progress of one run on one rank."""

    def __init__(self, plan: RunPlan, fingerprint: str, device: torch.device) -> None:
        self.plan = plan
        self.fingerprint = fingerprint
        self.world_size = plan.world_size
        torch.manual_seed(plan.seed)  # the same initial weights on every rank
        self.model = VecSetAutoEncoder(plan.model).to(device)
        self.ema = WeightAverage(self.model, plan.train.ema_decay)
        self.optimizer = make_optimizer(self.model.parameters(), plan.train, device)
        self.progress = Progress()

    @property
    def averaged(self) -> VecSetAutoEncoder:
        """The weight average, the model that is validated and saved for inference."""
        module = self.ema.module
        assert isinstance(module, VecSetAutoEncoder)
        return module

    def inference_checkpoint(self) -> dict[str, Any]:
        """What inference needs (``load_model``: model_config and the weight average), with where it was
        taken; a quarter of the full state (no raw weights, no optimizer moments)."""
        p = self.progress
        return {
            "model_config": as_dict(self.plan.model),
            "settings": as_dict(self.plan.train),
            "class_names": list(self.plan.class_names),
            "ema": self.ema.module.state_dict(),
            "epoch": p.epoch,
            "step": p.step,
            "best_metric": p.best_metric,
            "run_name": self.plan.run,
        }

    def checkpoint(self) -> dict[str, Any]:
        """Everything a restart needs: the inference checkpoint plus weights, optimizer, progress and RNG."""
        p = self.progress
        return self.inference_checkpoint() | {
            "model": self.model.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "batch_in_epoch": p.batch_in_epoch,
            "rng": rng_state(),
            "wandb_id": p.wandb_id,
            "fingerprint": self.fingerprint,
            "world_size": self.world_size,
        }

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.checkpoint())

    def save_inference(self, path: Path) -> None:
        save_checkpoint(path, self.inference_checkpoint())

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of this run: weights, average, optimizer, progress and RNG states."""
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        self.ema.updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(
            state["epoch"], state["step"], state["batch_in_epoch"], state["best_metric"], state["wandb_id"]
        )
        set_rng_state(state["rng"])

    def step(self, lr: float) -> torch.Tensor:
        """One optimizer step at ``lr`` on the accumulated gradients: clip, step, average; the gradient norm
        (a device tensor: reading it would wait for the step)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.plan.train.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        self.progress.step += 1
        return grad_norm
