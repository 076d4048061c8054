"""Checkpoints: weights_only loading, RNG round trip, and a kill during a write leaves the old file intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from vecset.model.checkpoint import load_checkpoint, save_checkpoint
from vecset.train.state import rng_state, set_rng_state


def test_checkpoint_loads_with_weights_only_and_restores_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "rng": rng_state()}
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["weight"], model.weight)
    expected = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    assert (random.random(), np.random.random(), torch.rand(1)) == expected  # noqa: NPY002


WRITER = """
import sys, torch
from vecset.model.checkpoint import save_checkpoint
big = {"w": torch.randn(64, 1024, 1024)}  # 256 MB: the write takes long enough to be killed mid-way
print("ready", flush=True)
while True:
    save_checkpoint(sys.argv[1], {"epoch": 2, "model": big})
"""


def test_kill_during_write_leaves_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"epoch": 1, "model": {"w": torch.ones(3)}})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while not any(p.name.startswith(".last.pt.") for p in tmp_path.iterdir()):  # a temp file is being written
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(target)  # the old one or a complete new one, never a torn file
    assert state["epoch"] in (1, 2)
    if state["epoch"] == 1:
        assert torch.equal(state["model"]["w"], torch.ones(3))
