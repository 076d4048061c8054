"""Which device a process computes on: training ranks, evaluation and encoding alike."""

from __future__ import annotations

import os

import torch

from vecset.settings import Device


def pick_device(device: Device) -> torch.device:
    """The process's GPU (LOCAL_RANK, 0 outside torchrun) for cuda, or for auto when one is visible; else the CPU."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no GPU is visible; set device: cpu or auto")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
