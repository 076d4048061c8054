"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``, and the model they hold.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled code), tagged with
:data:`CHECKPOINT_FORMAT`. It is written to a temp file in the destination folder, fsynced, then renamed over
the old one, so a kill at any moment leaves either the old or the new checkpoint, never a torn one.
``load_model`` rebuilds the autoencoder from a checkpoint's model config and its weight average (EMA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vecset.atomic import atomic_path
from vecset.model.vecset import VecSetAutoEncoder
from vecset.settings import ModelConfig, build

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code is ever executed), memory-mapped: tensors
    are read when used, so ranks that only check a 7 GB state's fingerprint read almost nothing."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a vecset checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VecSetAutoEncoder, dict[str, Any]]:
    """The model of a checkpoint (its weight average, in eval mode) and the checkpoint dict."""
    state = load_checkpoint(path)
    model = VecSetAutoEncoder(build(ModelConfig, state["model_config"]))
    model.load_state_dict(state["ema"])
    return model.to(device).eval(), state
