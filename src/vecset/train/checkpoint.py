"""Checkpoints: atomic writes, ``torch.load(weights_only=True)``-loadable contents, RNG state capture.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts: model config, weights, optimizer,
scheduler, epoch, step, position in the epoch, best metric, RNG states and the wandb run id. It is written to
a temp file in the destination folder, fsynced, then renamed over the old one, so a kill at any moment
leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vecset.atomic import atomic_path

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled code is ever executed)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a vecset checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def copy_atomic(source: Path, destination: Path) -> None:
    """Copy a file so that ``destination`` appears complete or not at all."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


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
