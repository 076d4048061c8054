"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``, and the model they hold.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled code), tagged with
:data:`CHECKPOINT_FORMAT`. It is written to a temp file in the destination folder, fsynced, then renamed over
the old one, so a kill at any moment leaves either the old or the new checkpoint, never a torn one.
``load_model`` rebuilds the autoencoder from a checkpoint's model config and its weight average (EMA).
"""

from __future__ import annotations

import pickle
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


FIX = "use a checkpoint this workflow wrote (results/train/<run>/checkpoint-best.pt), or rerun training"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: one line naming the file, the problem and the fix."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}; fix: {FIX}")
        self.problem = problem


def _first_sentence(text: str) -> str:
    """The first line's first sentence: torch's messages go on to advise loading the file unsafely."""
    lines = text.strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else ""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code is ever executed), memory-mapped: tensors
    are read when used, so ranks that only check a 7 GB state's fingerprint read almost nothing. Anything else
    (missing, torn, foreign, or holding code) raises one line naming the file, without torch's advice to load
    it unsafely."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise CheckpointError(path, "no such checkpoint") from None
    except pickle.UnpicklingError as err:
        lines = [line for line in str(err).splitlines() if "WeightsUnpickler error" in line]
        reason = _first_sentence(lines[0].split("error:", 1)[-1]) if lines else "it holds objects a safe load refuses"
        raise CheckpointError(path, f"refused, not loaded: it holds code ({reason})") from None
    except Exception as err:  # a torn or foreign file surfaces as many types
        reason = _first_sentence(str(err))
        raise CheckpointError(path, f"unreadable checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"not a vecset checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VecSetAutoEncoder, dict[str, Any]]:
    """The model of a checkpoint (its weight average, in eval mode) and the checkpoint dict; a checkpoint whose
    model config or weights do not make a model raises one line naming the file."""
    state = load_checkpoint(path)
    try:
        model = VecSetAutoEncoder(build(ModelConfig, state["model_config"]))
        model.load_state_dict(state["ema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = _first_sentence(str(err))
        raise CheckpointError(path, f"its model cannot be rebuilt ({type(err).__name__}: {reason})") from None
    return model.to(device).eval(), state
