"""Tiny training settings, their plan file, and a command-line launcher shared by the training tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vecset.config import resolve_runs, validate_config
from vecset.plan import write_plan

from conftest import DEFAULT_LABELS

TINY_TRAIN = {
    "preset": "tiny",
    "model": {"width": 32, "depth": 1, "dim_head": 16, "n_latents": 8, "decoder_ff": True},
    "epochs": 3,
    "batch_size": 2,
    "val_every_steps": 1,
    "warmup_steps": 2,
    "n_eikonal": 16,
    "items": {"n_input": 256, "n_vol": 200, "n_near": 100, "n_surface_loss": 50, "n_val_vol": 500},
    "wandb": {"mode": "disabled"},
    "tensorboard": False,
    "progress": False,
    "resources": {"cpus_per_rank": 1},
}


def write_test_plan(sample_dir: Path, run_dir: Path, settings: dict) -> Path:
    """The plan (settings.json) of a run with these train settings over the sample_dir split, checked as the
    workflow checks a config."""
    config = validate_config({"train": settings, "runs": {run_dir.name: {}}})
    plan = run_dir / "settings.json"
    write_plan(resolve_runs(config)[run_dir.name], 0, list(DEFAULT_LABELS), *split_csvs(sample_dir), plan)
    return plan


def split_csvs(sample_dir: Path) -> tuple[Path, Path]:
    return sample_dir / "splits" / "train.csv", sample_dir / "splits" / "val.csv"


def train_command(
    sample_dir: Path, run_dir: Path, settings: dict, ranks: int = 0, planned_ranks: int | None = None
) -> list[str]:
    """``python -m vecset.train.run ...`` (under ``torchrun --nproc_per_node=ranks`` when ranks > 0), its plan
    written first, for ``planned_ranks`` CPU ranks (default: as many as are started)."""
    resources = settings.get("resources", {}) | {"cpu_ranks": planned_ranks or max(ranks, 1)}
    settings = settings | {"resources": resources}
    launcher = [sys.executable]
    if ranks:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    train_csv, val_csv = split_csvs(sample_dir)
    return [
        *launcher,
        "-m", "vecset.train.run",
        "--plan", str(write_test_plan(sample_dir, run_dir, settings)),
        "--train-csv", str(train_csv),
        "--val-csv", str(val_csv),
        "--state-dir", str(run_dir / "state"),
        "--out-dir", str(run_dir),
    ]  # fmt: skip


def train_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in [k for k in env if k.startswith("WANDB_")]:
        del env[key]
    return env


def run_training(
    sample_dir: Path,
    run_dir: Path,
    settings: dict,
    ranks: int = 0,
    timeout: int = 300,
    planned_ranks: int | None = None,
):
    return subprocess.run(
        train_command(sample_dir, run_dir, settings, ranks, planned_ranks),
        capture_output=True, text=True, timeout=timeout, env=train_env(),
    )  # fmt: skip


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "state" / "metrics.jsonl").read_text().splitlines()]
