"""Latent fitting: a case's latent set adjusted by a few Adam steps so that the decoder's field fits the case's own
surface, the encoder's input at full density.

The encoder sees 1024 surface points once and places thin structures 1–2 mm off; the decoder can draw them
better than that (docs/decisions.md, "Latent fitting: 100 steps"). Each step draws ``fit_points`` of the case's
surface points, split evenly over its present structures, and lowers, per case:

- |f_c(x)| at points x of structure c (the surface term of training);
- 1 − cos(∇f_c(x), n(x)) at the same points (n: the stored outward normal; forward differences): the side on
  which the structure lies, which the surface term alone leaves open for a tube a few voxels wide. The direction
  only: a field whose slope is far from 1 (an early model) is not pulled off its surfaces to fix the slope;
- |f(q) − f₀(q)| at fixed uniform points q, for structures whose initial |f₀(q)| is beyond a margin: the field away
  from the surfaces stays where the encoder put it, while near them it is free to move;
- with ``proximal`` > 0, that weight times the mean squared difference of the latent set from the encoder's, per
  element: the fitted set stays near the distribution of encoder latent sets a generative model learns.

Only the latent set changes, so the result is still a latent set of the same model (stored by encode, decoded by
evaluate). Each case's loss and draws are its own: a case fits the same in any batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vecset.data import draws
from vecset.model.items import read_case
from vecset.model.vecset import VecSetAutoEncoder

ANCHOR_POINTS = 1024  # uniform points per case holding the far field
ANCHOR_MARGIN = 0.05  # normalised units (3–4 mm on the demo): nearer a surface than this the field may move
ANCHOR_WEIGHT = 0.3
NORMAL_WEIGHT = 0.1
NORMAL_STEP = 0.003  # forward-difference step, normalised units (≈ 0.2 mm): well inside a coronary's radius


@dataclass(frozen=True)
class CaseSurface:
    """One case's surface as the fitting reads it: points and outward normals (S, 3) in normalised units,
    structure index (S,), the present structures (C,), and the case id (which keys its random draws, so a case fits
    the same in evaluate and in encode)."""

    points: np.ndarray
    normals: np.ndarray
    labels: np.ndarray
    present: np.ndarray
    case: str

    @classmethod
    def read(cls, path: Path, n_classes: int, case: str) -> CaseSurface:
        """The surface of a sample file; a file that cannot be used raises SampleFileError naming it."""
        arrays = read_case(Path(path), n_classes, case)
        return cls(
            points=np.array(arrays["surface_points"], dtype=np.float32),  # copies: the file is memory-mapped
            normals=np.array(arrays["surface_normals"], dtype=np.float32),
            labels=np.array(arrays["surface_labels"], dtype=np.int64),
            present=np.array(arrays["present"], dtype=bool),
            case=case,
        )


@dataclass(frozen=True)
class FitResult:
    """The fitted latent sets (B, M, D) and each case's mean |f_c| at its surface points (normalised units, one
    fixed draw) before and after: after is the kept latent set's, the encoder's where the fit did not help."""

    z: torch.Tensor
    surface_before: torch.Tensor
    surface_after: torch.Tensor


class SurfaceDraws:
    """A case's per-step surface draws: ``n`` indices split evenly over its present structures."""

    def __init__(self, surface: CaseSurface, n: int, seed: int) -> None:
        self.rng = draws.case_rng(seed, surface.case, draws.FIT)
        classes = [c for c in np.flatnonzero(surface.present) if np.any(surface.labels == c)]
        if not classes:
            raise ValueError(
                f"{surface.case}: no surface point of a present structure to fit the latent set to; "
                "rerun the sample rule, or set eval.fit_steps: 0"
            )
        self.by_class = [np.flatnonzero(surface.labels == c) for c in classes]
        self.counts = np.diff(np.linspace(0, n, len(classes) + 1).astype(int))

    def indices(self) -> np.ndarray:
        return np.concatenate(
            [ix[self.rng.integers(0, len(ix), size=k)] for ix, k in zip(self.by_class, self.counts, strict=True)]
        )


def _per_case_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each case's (point, class) entries where ``mask``; values and mask (B, N, C)."""
    total = torch.where(mask, values, values.new_zeros(())).sum(dim=(1, 2))
    return total / mask.sum(dim=(1, 2)).clamp(min=1)


def _own_error(model: VecSetAutoEncoder, z: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each case's mean |f_c| at its points of structure c: z (B, M, D), points (B, N, 3), labels (B, N)."""
    with torch.no_grad():
        f = model.query(model.latent_context(z), points).float()
    return f.gather(-1, labels[..., None])[..., 0].abs().mean(dim=1)


class _BatchDraws:
    """Each case's surface on the device, a fixed set of anchor points per case, and stacked draws of
    ``n_points`` surface points per case (vecset.eval.fitting.SurfaceDraws, seeded)."""

    def __init__(self, surfaces: Sequence[CaseSurface], n_points: int, seed: int, device: torch.device) -> None:
        self.draws = [SurfaceDraws(s, n_points, seed) for s in surfaces]
        keys = ("points", "normals", "labels", "present")
        self.tensors = [{k: torch.from_numpy(getattr(s, k)).to(device) for k in keys} for s in surfaces]
        self.device = device
        self.present = torch.stack([t["present"] for t in self.tensors])[:, None, :]  # (B, 1, C)
        self.anchors = torch.stack(
            [torch.from_numpy(d.rng.uniform(-1.0, 1.0, (ANCHOR_POINTS, 3)).astype(np.float32)) for d in self.draws]
        ).to(device)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points, labels, normals) of one draw per case, stacked."""
        idx = [torch.from_numpy(d.indices()).to(self.device) for d in self.draws]
        return tuple(  # type: ignore[return-value]
            torch.stack([t[key][i] for t, i in zip(self.tensors, idx, strict=True)])
            for key in ("points", "labels", "normals")
        )


@dataclass(frozen=True)
class _Anchor:
    """Where the fit holds the field: anchor points (B, A, 3), the field there before the fit (B, A, C), and which
    entries are held (farther than ANCHOR_MARGIN from a present structure's surface)."""

    points: torch.Tensor
    initial: torch.Tensor
    hold: torch.Tensor


def _fit_loss(
    model: VecSetAutoEncoder,
    z: torch.Tensor,
    draw: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    anchor: _Anchor,
    bf16: bool,
) -> torch.Tensor:
    """Per case (B,): the surface term, the normal term and the anchors' hold, at one draw of surface points."""
    points, labels, normals = draw
    n, device = points.shape[1], points.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        context = model.latent_context(z)
        f_anchor = model.query(context, anchor.points).float()
    # The surface values and their differences in full precision: bf16 keeps ~3 digits, which would swamp
    # differences over 0.2 mm.
    with torch.autocast(device.type, enabled=False):
        offsets = (points[:, :, None, :] + torch.eye(3, device=device) * NORMAL_STEP).flatten(1, 2)
        f = model.query(context.float(), torch.cat([points, offsets], dim=1))
    f_surface, f_offsets = f[:, :n], f[:, n:].unflatten(1, (n, 3))  # (B, n, C), (B, n, 3, C)
    own = labels[:, :, None, None]
    gradient = (f_offsets - f_surface[:, :, None, :]).gather(3, own.expand(-1, -1, 3, 1))[..., 0]
    surface = f_surface.gather(-1, labels[..., None])[..., 0].abs().mean(dim=1)
    normal = (1.0 - F.cosine_similarity(gradient, normals, dim=-1)).mean(dim=1)  # direction only: no / h
    hold_error = _per_case_mean((f_anchor - anchor.initial).abs(), anchor.hold)
    return surface + ANCHOR_WEIGHT * hold_error + NORMAL_WEIGHT * normal


def fit_latents(
    model: VecSetAutoEncoder,
    z: torch.Tensor,
    surfaces: Sequence[CaseSurface],
    steps: int,
    lr: float,
    n_points: int,
    seed: int = 0,
    bf16: bool = False,
    proximal: float = 0.0,
) -> FitResult:
    """``z`` (B, M, D) fitted to ``surfaces`` (one per case) by ``steps`` Adam steps on the model's device, the
    latent set in float32, held near ``z`` by the ``proximal`` weight; with ``bf16`` (a GPU), the latent context and
    the anchor queries under bf16 autocast,
    the surface queries and their forward differences in float32 (as training's eikonal stencil). The model is
    left unchanged. A case whose surface term the fit did not lower (on a fixed draw of its points, the one
    ``surface_before`` and ``surface_after`` report) keeps its encoder latent set. With ``steps`` 0, ``z`` as it
    is (and NaN surface terms)."""
    b = len(surfaces)
    if z.shape[0] != b:
        raise ValueError(f"{z.shape[0]} latent sets for {b} surfaces")
    if steps == 0:
        nan = torch.full((b,), float("nan"))
        return FitResult(z, nan, nan)
    device = next(model.parameters()).device
    batch = _BatchDraws(surfaces, n_points, seed, device)
    check_points, check_labels, _ = batch.draw()
    start = z.detach().to(device, torch.float32)
    before = _own_error(model, start, check_points, check_labels)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        initial = model.query(model.latent_context(start), batch.anchors).float()
    anchor = _Anchor(batch.anchors, initial, (initial.abs() > ANCHOR_MARGIN) & batch.present)
    z = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    # Cosine decay to zero: the last steps settle the thin structures (coronaries' Dice +0.05 over a constant rate).
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        with torch.enable_grad():
            loss = _fit_loss(model, z, batch.draw(), anchor, bf16)
            if proximal:
                loss = loss + proximal * (z - start).square().mean(dim=(1, 2))
            (z.grad,) = torch.autograd.grad(loss.sum(), [z])  # the latent's gradient only: none for the weights
        optimizer.step()
        schedule.step()
    fitted = z.detach()
    after = _own_error(model, fitted, check_points, check_labels)
    better = after < before
    fitted = torch.where(better[:, None, None], fitted, start)
    return FitResult(fitted, before.cpu(), torch.where(better, after, before).cpu())
