"""Training settings of one run: the config's ``train`` section merged with the run's overrides."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from vecset.config import deep_merge
from vecset.model.config import preset_config

WANDB_MODES = ("offline", "online", "disabled")
# Changing these does not invalidate a run's state: more epochs extend it, the rest is bookkeeping.
RESUMABLE_KEYS = ("epochs", "val_every", "num_workers", "threads", "wandb", "tensorboard", "progress", "cache_samples")


@dataclass(frozen=True)
class ItemSettings:
    """How many points of each kind one item holds, and how they are drawn."""

    n_input: int = 1024
    input_sampling: str = "fps"
    n_vol: int = 768
    n_near: int = 384
    n_surface_loss: int = 128
    n_val_vol: int = 4096
    n_latents: int = 0  # > 0 only for FPS latent queries
    fps_backend: str = "auto"
    rotate_deg: float = 0.0
    scale_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.input_sampling not in ("fps", "uniform"):
            raise ValueError(f"input_sampling must be 'fps' or 'uniform', got {self.input_sampling!r}")
        if self.rotate_deg < 0 or not 0 <= self.scale_jitter < 1:
            raise ValueError("rotate_deg must be >= 0 and scale_jitter in [0, 1)")

    def for_model(self, model_config: Any) -> ItemSettings:
        """These settings with as many FPS latent points as the model has latents (FPS latent queries)."""
        if model_config.latent_queries != "fps" or self.n_latents == model_config.n_latents:
            return self
        return replace(self, n_latents=model_config.n_latents)


@dataclass(frozen=True)
class LossWeights:
    vol: float = 1.0
    near: float = 1.0
    surface: float = 1.0
    eikonal: float = 0.1
    kl: float = 1e-3


@dataclass(frozen=True)
class TrainSettings:
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=lambda: {"bottleneck": "none", "decoder_ff": True})
    epochs: int = 250
    batch_size: int = 4
    accum_steps: int = 1
    lr: float = 3e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 50
    clip_grad: float = 1.0
    ema_decay: float = 0.995
    val_every: int = 25
    eikonal_step: float = 0.01
    n_eikonal: int = 32
    weights: LossWeights = field(default_factory=LossWeights)
    items: ItemSettings = field(default_factory=ItemSettings)
    num_workers: int = 0
    threads: int = 0
    device: str = "auto"
    seed: int = 0
    wandb: dict[str, Any] = field(default_factory=lambda: {"mode": "offline", "project": "vecset-heart"})
    tensorboard: bool = True
    progress: bool = True
    cache_samples: str = "auto"  # auto: keep files in memory when they total <= CACHE_AUTO_BYTES
    thin_structures: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.epochs < 1 or self.batch_size < 1 or self.accum_steps < 1:
            raise ValueError("epochs, batch_size and accum_steps must be >= 1")
        if self.cache_samples not in ("auto", "always", "never"):
            raise ValueError(f"cache_samples must be auto, always or never, got {self.cache_samples!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        mode = self.wandb.get("mode", "offline")
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb.mode must be one of {WANDB_MODES}, got {mode!r}")
        if "api_key" in self.wandb or "key" in self.wandb:
            raise ValueError("wandb keys never go in the config; export WANDB_API_KEY in the environment")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
        values = dict(values)
        if "weights" in values:
            values["weights"] = LossWeights(**values["weights"])
        if "items" in values:
            values["items"] = ItemSettings(**values["items"])
        if "thin_structures" in values:
            values["thin_structures"] = tuple(values["thin_structures"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["thin_structures"] = list(self.thin_structures)
        return values

    def fingerprint(self) -> str:
        """Hash of every setting that changes what training computes (not epochs or logging)."""
        values = {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_KEYS}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def run_settings(train: dict[str, Any], overrides: dict[str, Any], folds: int, run: str) -> dict[str, Any]:
    """One run's job description from the config: ``settings`` (TrainSettings as a dict, checked),
    ``resources`` and ``fold``. Raises ValueError naming the run and the problem."""
    merged = deep_merge(train, {k: v for k, v in overrides.items() if k != "fold"})
    fold = overrides.get("fold")
    if fold is not None and not (folds >= 2 and 0 <= int(fold) < folds):
        raise ValueError(f"runs.{run}.fold = {fold!r}: needs split.folds >= 2 and 0 <= fold < split.folds ({folds})")
    resources = merged.pop("resources", {})
    merged["threads"] = int(resources.get("threads_per_rank", 0))
    try:
        settings = TrainSettings.from_dict(merged)
        preset_config(settings.preset, 1, **settings.model)
    except (TypeError, ValueError) as err:
        raise ValueError(f"runs.{run}: invalid training settings: {err}") from None
    return {"settings": settings.to_dict(), "resources": resources, "fold": fold}
