"""Multi-class VecSet shape autoencoder.

Encoder: Fourier embedding of xyz plus a linear map of the one-hot class label for each input point, one
cross-attention from M latent queries (learnable, or embeddings of farthest-point-sampled input points), a
bottleneck (none / KL / normalised). Decoder: L self-attention blocks over the latents, one
cross-attention from xyz-only query points, and a C-channel signed-distance head.

Attention goes through ``scaled_dot_product_attention`` with head dim <= 128 so fused kernels apply; the
eikonal term uses finite differences (vecset.train.losses), so no double backward is ever needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vecset.settings import FourierBasis, ModelConfig

KeyValues = tuple[torch.Tensor, torch.Tensor]  # an attention's keys and values, (B, heads, M, dim_head) each


def octave_frames(octaves: int, kind: FourierBasis) -> torch.Tensor:
    """(octaves, 3, 3) orthonormal frames whose columns are the frequency directions of each octave: the identity
    for ``axes``; for ``rotated``, rotations drawn from a fixed seed, so every model (and every reload of a
    checkpoint) gets the same ones without storing them."""
    if kind == "axes":
        return torch.eye(3).expand(octaves, 3, 3).clone()
    generator = torch.Generator().manual_seed(0)
    q, r = torch.linalg.qr(torch.randn(octaves, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # the unique QR with r's diagonal > 0
    q[:, :, 0] *= torch.sign(torch.linalg.det(q))[:, None]  # a rotation, not a reflection
    return q.float()


class FourierEmbed(nn.Module):
    """sin/cos of xyz at octave frequencies along three directions per octave (:func:`octave_frames`),
    concatenated with the raw input, then a linear map to ``width``."""

    basis: torch.Tensor  # (3, features / 2), a buffer

    def __init__(self, in_dim: int, width: int, features: int, basis_kind: FourierBasis = "axes") -> None:
        super().__init__()
        octaves = features // 6
        freqs = (2.0 ** torch.arange(octaves, dtype=torch.float32)) * math.pi
        frames = octave_frames(octaves, basis_kind)  # (octave, xyz, direction)
        # Column direction * octaves + octave, so "axes" keeps the layout of the axis-aligned embedding.
        basis = (frames * freqs[:, None, None]).permute(1, 2, 0).reshape(3, 3 * octaves)
        self.register_buffer("basis", basis, persistent=False)
        self.proj = nn.Linear(features + in_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Elementwise, not a matmul: autocast and TF32 would round xyz to ~3 digits before the sin/cos, and
        # finite differences (the eikonal term) of nearby points depend on every digit.
        angles = (x[..., :3, None].float() * self.basis).sum(dim=-2)
        return self.proj(torch.cat([angles.sin(), angles.cos(), x.float()], dim=-1).to(x.dtype))


class Attention(nn.Module):
    """Multi-head attention through scaled_dot_product_attention; ``context`` defaults to self-attention."""

    def __init__(self, width: int, dim_head: int) -> None:
        super().__init__()
        self.heads = width // dim_head
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_kv = nn.Linear(width, 2 * width, bias=False)
        self.to_out = nn.Linear(width, width)

    def key_values(self, context: torch.Tensor) -> KeyValues:
        """Keys and values (B, heads, M, dim_head) each of a context (B, M, width): what a cross-attention
        reuses for every chunk of queries against one context."""
        b, m, _ = context.shape
        k, v = self.to_kv(context).view(b, m, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, kv: KeyValues | None = None
    ) -> torch.Tensor:
        b, n, w = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = kv if kv is not None else self.key_values(x if context is None else context)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, w))


class FeedForward(nn.Module):
    """GEGLU feed-forward with hidden size ``mult * width``."""

    def __init__(self, width: int, mult: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 2 * mult * width)
        self.down = nn.Linear(mult * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.up(x).chunk(2, dim=-1)
        return self.down(value * F.gelu(gate))


class Block(nn.Module):
    """Pre-norm attention (self or cross) + optional pre-norm feed-forward, both residual."""

    def __init__(self, width: int, dim_head: int, ff_mult: int | None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = Attention(width, dim_head)
        self.ff_norm = nn.LayerNorm(width) if ff_mult else None
        self.ff = FeedForward(width, ff_mult) if ff_mult else None

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, kv: KeyValues | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm(x), context, kv)
        if self.ff is not None and self.ff_norm is not None:
            x = x + self.ff(self.ff_norm(x))
        return x


class Bottleneck(nn.Module):
    """none: identity; kl: diagonal Gaussian with KL term; normalized: linear + affine-free LayerNorm."""

    def __init__(self, kind: str, width: int, latent_dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "kl":
            self.pre = nn.Linear(width, 2 * latent_dim)
        elif kind == "normalized":
            self.pre = nn.Linear(width, latent_dim)
            self.norm = nn.LayerNorm(latent_dim, elementwise_affine=False)
        if kind != "none":
            self.post = nn.Linear(latent_dim, width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent code, KL term (0 unless kind == 'kl'))."""
        zero = x.new_zeros(())
        if self.kind == "none":
            return x, zero
        if self.kind == "normalized":
            return self.norm(self.pre(x)), zero
        mean, logvar = self.pre(x).chunk(2, dim=-1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return z, kl

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.kind == "none" else self.post(z)


class VecSetAutoEncoder(nn.Module):
    """Surface points with one-hot labels (B, N, 3+C) → latent set → per-class SDF at xyz queries (B, Q, C)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config, config.width
        self.point_embed = FourierEmbed(3 + c.n_classes, w, c.fourier_features, c.fourier_basis)
        self.query_embed = FourierEmbed(3, w, c.fourier_features, c.fourier_basis)
        if c.latent_queries == "learnable":
            self.latents = nn.Parameter(torch.randn(c.n_latents, w) * 0.02)
        self.encoder = Block(w, c.dim_head, c.ff_mult)
        self.bottleneck = Bottleneck(c.bottleneck, w, c.latent_dim)
        self.blocks = nn.ModuleList(Block(w, c.dim_head, c.ff_mult) for _ in range(c.depth))
        self.decoder = Block(w, c.dim_head, c.ff_mult if c.decoder_ff else None)
        self.head_norm = nn.LayerNorm(w)
        # Recompute each latent self-attention block in the backward pass (train.activation_checkpointing).
        self.activation_checkpointing = False
        self.head = nn.Linear(w, c.n_classes)
        # Small random head (not zero): the first predictions take both signs, so IoU is informative from step 0.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(M, D) of one case's latent set: M latents of the bottleneck's channels (the width without one)."""
        c = self.config
        return c.n_latents, c.width if c.bottleneck == "none" else c.latent_dim

    def encode(
        self, surface: torch.Tensor, latent_points: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent code (B, M, latent_dim or width), KL term). ``latent_points`` (B, M, 3+C): FPS queries."""
        embedded = self.point_embed(surface)
        if self.config.latent_queries == "learnable":
            queries = self.latents.expand(surface.shape[0], -1, -1)
        else:
            if latent_points is None:
                from vecset.model.fps import fps_batch

                idx = fps_batch(surface[..., :3].detach().float(), self.config.n_latents)
                latent_points = torch.gather(surface, 1, idx[..., None].expand(-1, -1, surface.shape[-1]))
            queries = self.point_embed(latent_points)
        return self.bottleneck.encode(self.encoder(queries, embedded))

    def latent_context(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's key/value set: bottleneck decode + self-attention blocks (computed once per shape)."""
        x = self.bottleneck.decode(z)
        if self.config.latent_queries == "learnable":
            x = x + self.latents
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return x

    def decoder_key_values(self, context: torch.Tensor) -> KeyValues:
        """The decoder cross-attention's keys and values for a latent context: computed once per shape when its
        SDF is queried in many chunks (:meth:`query` with ``kv``)."""
        return self.decoder.attn.key_values(context)

    def query(self, context: torch.Tensor, points: torch.Tensor, kv: KeyValues | None = None) -> torch.Tensor:
        """Per-class SDF (B, Q, C) at xyz ``points`` (B, Q, 3) given the latent context (or its decoder keys and
        values ``kv`` from :meth:`decoder_key_values`, which give the same result without recomputing them)."""
        h = self.decoder(self.query_embed(points), context, kv)
        # The head in fp32 under autocast: a signed distance near zero is a sum of large terms that cancel, and
        # bf16 inputs there cost thin structures up to 3 % of their Dice (docs/decisions.md, "Evaluation in bf16 on
        # GPUs"); it is 0.1 % of the work.
        device = h.device.type
        if device in ("cuda", "cpu") and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self.head(self.head_norm(h.float()))
        return self.head(self.head_norm(h))

    def forward(
        self, surface: torch.Tensor, points: torch.Tensor, latent_points: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(SDF (B, Q, C), KL term)."""
        z, kl = self.encode(surface, latent_points)
        return self.query(self.latent_context(z), points), kl


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
