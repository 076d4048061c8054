"""Farthest point sampling: exact torch fallback against brute force; no silent random fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vecset.model.fps import backend_available, fps_batch, fps_numpy, fps_torch


def brute_force_fps(points: np.ndarray, k: int, start: int = 0) -> list[int]:
    chosen = [start]
    for _ in range(k - 1):
        d = np.min([[np.sum((p - points[c]) ** 2) for c in chosen] for p in points], axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


def test_torch_fallback_matches_brute_force_per_batch_item():
    rng = np.random.default_rng(0)
    clouds = rng.normal(size=(3, 150, 3)).astype(np.float32)
    idx = fps_torch(torch.from_numpy(clouds), 20)
    for b in range(3):
        assert idx[b].tolist() == brute_force_fps(clouds[b].astype(np.float64), 20)


def test_fpsample_picks_the_same_set_as_exact_fps_from_its_start():
    points = np.random.default_rng(1).uniform(size=(3000, 3)).astype(np.float32)
    idx = fps_numpy(points, 64)
    assert len(set(idx.tolist())) == 64
    exact = fps_torch(torch.from_numpy(points)[None], 64, start=torch.tensor([int(idx[0])]))[0]
    assert set(exact.tolist()) == set(idx.tolist())


def test_missing_backend_raises_instead_of_sampling_randomly(monkeypatch):
    import vecset.model.fps as fps

    monkeypatch.setattr(fps, "backend_available", lambda name: name in ("auto", "torch"))
    with pytest.raises(RuntimeError, match=r"torch_cluster.*not installed"):
        fps_batch(torch.zeros(1, 10, 3), 4, backend="torch_cluster")
    with pytest.raises(RuntimeError, match="fpsample"):
        fps_numpy(np.zeros((10, 3)), 4, backend="fpsample")
    assert backend_available("torch")
    with pytest.raises(ValueError):
        backend_available("random")
