"""Rank-0 logging of a run: messages and a tqdm bar on stderr, metrics.jsonl, TensorBoard and wandb.

wandb runs offline by default (its files stay in the state folder) and only goes online when the config
says ``wandb.mode: online``; its API key is read by wandb itself from WANDB_API_KEY, never from config.
Other ranks get a RunLog whose methods do nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vecset.atomic import append_line, write_bytes_atomic
from vecset.plan import RunPlan
from vecset.settings import as_dict


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


HISTORY = "messages.log"  # in the state folder: every attempt's messages (a retried job's log is replaced)


def append_history(state_dir: Path, text: str) -> None:
    """Append ``text``, dated, to the run's message history (state_dir/messages.log)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / HISTORY, "a") as history:
        history.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}\n")


class RunLog:
    def __init__(self, state_dir: Path, is_main: bool, plan: RunPlan) -> None:
        self.state_dir = Path(state_dir)
        self.is_main = is_main
        self.plan = plan
        self.settings = plan.train
        self.metrics_path = self.state_dir / "metrics.jsonl"
        self.history_path = self.state_dir / HISTORY
        self._tb: Any = None  # torch.utils.tensorboard.SummaryWriter, imported when used
        self._wandb: Any = None  # a wandb run

    def message(self, text: str) -> None:
        """Print a line on stderr and append it, dated, to state_dir/messages.log (rank 0 only)."""
        if self.is_main:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
            append_history(self.state_dir, text)

    def repair(self, step: int) -> None:
        """Rank 0, at a start: rewrite metrics.jsonl (atomically) without lines a crash or a full disk tore
        and without records past ``step``, the resumed state's step (those steps run again and log again)."""
        if not (self.is_main and self.metrics_path.exists()):
            return
        lines = self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept, torn = [], 0
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("step", 0), int | float):
                torn += 1  # torn by a crash or a full disk, or not a record at all
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        if len(kept) != len(lines):
            write_bytes_atomic(self.metrics_path, "".join(f"{line}\n" for line in kept).encode())
            self.message(
                f"{self.metrics_path}: dropped {torn} torn line(s) and {len(lines) - len(kept) - torn} record(s) "
                f"past step {step}, which run again"
            )

    def start(self, progress: Any) -> None:
        """Say what the plan implies, and open TensorBoard and wandb (resuming the stored run id) on rank 0.
        A new wandb run id is stored in ``progress``, so the run's checkpoints carry it."""
        if not self.is_main:
            return
        implied = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in self.plan.implied().items())
        cadence = f"state/last.pt every {self.settings.checkpoint_minutes:g} min"
        self.message(f"run {self.plan.run}: model {as_dict(self.plan.model)}; {implied}; {cadence}")
        if self.settings.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.state_dir / "tensorboard"), purge_step=progress.step or None)
        wandb_settings = self.settings.wandb
        if wandb_settings.mode == "online" and not os.environ.get("WANDB_API_KEY"):
            raise RuntimeError(
                f"run {self.plan.run}: train.wandb.mode is online but WANDB_API_KEY is not set in the job's "
                "environment; export it where snakemake starts (the key is never read from the config), or set "
                "train.wandb.mode: offline (files under the state folder, to sync later)"
            )
        if wandb_settings.mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            if wandb_settings.mode == "offline":
                # wandb.init(mode="offline") alone still probes its telemetry server from a thread (a DNS query
                # and an HTTPS post in wandb 0.31): its process-wide settings read the mode from the environment.
                os.environ.update(WANDB_MODE="offline", WANDB_ERROR_REPORTING="false")
            import wandb

            if progress.wandb_id is None:
                progress.wandb_id = uuid.uuid4().hex[:8]
            self._wandb = wandb.init(
                project=wandb_settings.project,
                entity=wandb_settings.entity,
                name=self.plan.run,
                id=progress.wandb_id,
                resume="allow",
                mode=wandb_settings.mode,
                dir=str(self.state_dir),
                config=as_dict(self.settings) | {"model": as_dict(self.plan.model)},
            )

    def bar(self, total: int, initial: int) -> Any:
        """A bar over the run's optimizer steps (rank 0, train.progress)."""
        if not (self.is_main and self.settings.progress):
            return _NoBar()
        return tqdm(
            total=total,
            initial=initial,
            desc=f"run {self.plan.run} steps",
            file=sys.stderr,
            mininterval=2.0,
            leave=False,
            dynamic_ncols=True,
        )

    def step(self, step: int, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def record(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl (an epoch's training means, or a validation), whole or not at all, and
        print a summary."""
        if not self.is_main:
            return
        append_line(self.metrics_path, json.dumps(record, sort_keys=True))
        scalars = {
            (k.replace("val_", "val/", 1) if k.startswith("val_") else f"epoch/{k}"): v
            for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("epoch", "step")
        }
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, record["step"])
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=record["step"])
        keys = ("train_loss", "data_wait_fraction", "val_mean_iou", "val_mean_iou_large", "val_mean_iou_thin")
        shown = {k: record[k] for k in keys if k in record}
        summary = " ".join(f"{k}={v:.4f}" for k, v in shown.items())
        self.message(f"epoch {record['epoch']} step {record['step']}/{self.plan.total_steps} {summary}")

    def finish(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
