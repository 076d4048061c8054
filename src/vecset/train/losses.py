"""Losses and metrics for per-class SDF prediction; every term masks structures absent from a case.

Masking uses ``torch.where`` on finite values only: multiplying by a mask would let NaN or inf through.
"""

from __future__ import annotations

import torch

from vecset.settings import WALL_BAND


def truncated(pred: torch.Tensor, target: torch.Tensor, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) for an L1 truncated at ``truncation`` (> 0): targets clamped to ±truncation; where a
    target lies beyond it, a prediction beyond it on the same side counts as exact (no loss, no gradient), and one
    short of it keeps its gradient. DeepSDF clamps the prediction too, which stops the gradient of a prediction
    on the wrong side of a far target."""
    far_out, far_in = target >= truncation, target <= -truncation
    pred = torch.where(far_out, pred.clamp(max=truncation), torch.where(far_in, pred.clamp(min=-truncation), pred))
    return pred, target.clamp(-truncation, truncation)


def masked_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    present: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    truncation: float = 0.0,
) -> torch.Tensor:
    """Mean |pred - target| over (item, point, class) entries whose class is present; (B, N, C) inputs. With
    ``class_weights`` (C,), the mean weighted by class; with ``truncation`` > 0, the L1 of :func:`truncated`."""
    mask = present[:, None, :].expand_as(pred)
    target = torch.where(mask, target, pred.detach())
    if truncation > 0:
        pred, target = truncated(pred, target, truncation)
    diff = torch.where(mask, (pred - target).abs(), pred.new_zeros(()))
    if class_weights is None:
        return diff.sum() / mask.sum().clamp(min=1)
    return (diff * class_weights).sum() / (mask * class_weights).sum().clamp(min=1e-12)


def surface_term(pred: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |f_c(x)| at surface points x of class c: pred (B, S, C), labels (B, S); with ``class_weights`` (C,),
    weighted by each point's class."""
    values = pred.gather(-1, labels[..., None])[..., 0].abs()
    if class_weights is None:
        return values.mean()
    weights = class_weights[labels]
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def exclusion_term(
    pred: torch.Tensor, target: torch.Tensor, present: torch.Tensor, band: float = WALL_BAND
) -> torch.Tensor:
    """Mean over the query points at a shared wall of ``relu(−(f_a + f_b))``: pred and target (B, N, C), present
    (B, C). A point is at a wall when its exact SDFs (``target``) put two present structures a, b within ``band`` of
    it; f_a, f_b are the predicted SDFs of those two. Exact SDFs of disjoint structures never sum below zero (a point
    inside one at depth d is at least d from the other), so the truth costs nothing and only the points a prediction
    puts inside both structures of a wall are penalised. Zero where a batch has no wall point."""
    if pred.shape[-1] < 2:
        return pred.new_zeros(())
    # Absent structures stand far away (a finite value: inf would make NaN through topk).
    nearest = torch.topk(torch.where(present[:, None, :], target, target.new_full((), 1e4)), k=2, dim=-1, largest=False)
    wall = nearest.values[..., 1] < band
    cost = torch.relu(-pred.gather(-1, nearest.indices).sum(dim=-1))
    return torch.where(wall, cost, cost.new_zeros(())).sum() / wall.sum().clamp(min=1)


def fd_stencil(points: torch.Tensor, step: float) -> torch.Tensor:
    """Central-difference stencil of ``points`` (B, P, 3): (B, P * 6, 3), +step then -step along x, y, z."""
    b, p, _ = points.shape
    offsets = torch.eye(3, dtype=points.dtype, device=points.device) * step
    shifted = torch.cat([points[:, :, None, :] + offsets, points[:, :, None, :] - offsets], dim=2)
    return shifted.reshape(b, p * 6, 3)


def fd_gradient(values: torch.Tensor, step: float) -> torch.Tensor:
    """Gradient (B, P, C, 3) from function values (B, P * 6, C) at fd_stencil points."""
    b, n, c = values.shape
    v = values.reshape(b, n // 6, 6, c)
    return ((v[:, :, :3] - v[:, :, 3:]) / (2 * step)).transpose(2, 3)


def eikonal_term(gradient: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean (|∇f_c| - 1)^2 over present classes: gradient (B, P, C, 3), present (B, C)."""
    residual = (gradient.norm(dim=-1) - 1.0) ** 2
    mask = present[:, None, :].expand_as(residual)
    return torch.where(mask, residual, residual.new_zeros(())).sum() / mask.sum().clamp(min=1)


def iou_counts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item and class (B, C): |pred inside ∩ target inside| and |∪|, inside = sdf < 0."""
    p, t = pred < 0, target < 0
    return (p & t).sum(dim=1).double(), (p | t).sum(dim=1).double()


def per_class_iou(intersection: torch.Tensor, union: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Per item and class IoU (B, C); NaN where the class is absent. An empty union (present but no
    inside point in the sample and none predicted) scores 1."""
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    return torch.where(present, iou, torch.full_like(iou, float("nan")))
