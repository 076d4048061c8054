"""Tiny training settings and a command-line launcher shared by the training tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

TINY_TRAIN = {
    "preset": "tiny",
    "model": {"width": 32, "depth": 1, "dim_head": 16, "n_latents": 8, "decoder_ff": True},
    "epochs": 3,
    "batch_size": 2,
    "val_every": 1,
    "warmup_steps": 2,
    "n_eikonal": 16,
    "items": {"n_input": 256, "n_vol": 200, "n_near": 100, "n_surface_loss": 50, "n_val_vol": 500},
    "wandb": {"mode": "disabled"},
    "tensorboard": False,
    "progress": False,
    "threads": 1,
}


def train_command(sample_dir: Path, run_dir: Path, settings: dict, ranks: int = 0) -> list[str]:
    """``python -m vecset.train.run ...``, under ``torchrun --nproc_per_node=ranks`` when ranks > 0."""
    launcher = [sys.executable]
    if ranks:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    return [
        *launcher,
        "-m", "vecset.train.run",
        "--settings", json.dumps(settings),
        "--train-csv", str(sample_dir / "splits" / "train.csv"),
        "--val-csv", str(sample_dir / "splits" / "val.csv"),
        "--state-dir", str(run_dir / "state"),
        "--out-dir", str(run_dir),
        "--run-name", run_dir.name,
    ]  # fmt: skip


def train_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    for key in [k for k in env if k.startswith("WANDB_")]:
        del env[key]
    return env


def run_training(sample_dir: Path, run_dir: Path, settings: dict, ranks: int = 0, timeout: int = 300):
    return subprocess.run(
        train_command(sample_dir, run_dir, settings, ranks),
        capture_output=True, text=True, timeout=timeout, env=train_env(),
    )  # fmt: skip


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "state" / "metrics.jsonl").read_text().splitlines()]
