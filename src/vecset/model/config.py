"""The autoencoder's configuration: sizes, bottleneck, latent queries and the named presets.

Torch-free, so the workflow can check a run's model settings when it parses the config without paying for
importing torch on every `snakemake` call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

BOTTLENECKS = ("none", "kl", "normalized")
LATENT_QUERIES = ("learnable", "fps")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored in every checkpoint."""

    n_classes: int
    width: int = 128
    depth: int = 2
    dim_head: int = 32
    n_latents: int = 64
    latent_dim: int = 16
    bottleneck: str = "normalized"
    latent_queries: str = "learnable"
    fourier_features: int = 48
    ff_mult: int = 4
    decoder_ff: bool = False  # a feed-forward after the decoder cross-attention (upstream has none)

    def __post_init__(self) -> None:
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        if self.width % self.dim_head:
            raise ValueError(f"width {self.width} is not a multiple of dim_head {self.dim_head}")
        if not 8 <= self.dim_head <= 128:
            raise ValueError(f"dim_head must be in 8..128 so fused attention kernels apply, got {self.dim_head}")
        if self.fourier_features % 6:
            raise ValueError(f"fourier_features must be a multiple of 6, got {self.fourier_features}")
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(f"bottleneck must be one of {BOTTLENECKS}, got {self.bottleneck!r}")
        if self.latent_queries not in LATENT_QUERIES:
            raise ValueError(f"latent_queries must be one of {LATENT_QUERIES}, got {self.latent_queries!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


# Named sizes. "upstream" is VecSetX's learnable_vec1024x16_dim1024_depth24_nb (≈425 M parameters).
PRESETS: dict[str, dict] = {
    "tiny": {"width": 128, "depth": 2, "dim_head": 32, "n_latents": 64, "latent_dim": 16},
    "small": {"width": 256, "depth": 6, "dim_head": 64, "n_latents": 256, "latent_dim": 16},
    "base": {"width": 512, "depth": 12, "dim_head": 64, "n_latents": 512, "latent_dim": 16},
    "upstream": {"width": 1024, "depth": 24, "dim_head": 64, "n_latents": 1024, "latent_dim": 16},
}


def preset_config(name: str, n_classes: int, **overrides) -> ModelConfig:
    """The named preset for ``n_classes`` structures, with any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(ModelConfig(n_classes=n_classes, **PRESETS[name]), **overrides)
