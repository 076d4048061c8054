"""Losses: finite-difference eikonal against autograd, masking of absent structures, IoU."""

from __future__ import annotations

import torch

from vecset.train.losses import (
    eikonal_term,
    fd_gradient,
    fd_stencil,
    iou_counts,
    masked_l1,
    per_class_iou,
)


def smooth(points: torch.Tensor) -> torch.Tensor:
    """Two smooth channels: a sphere SDF and a wavy field."""
    x, y, z = points.unbind(-1)
    return torch.stack([points.norm(dim=-1) - 0.5, torch.sin(2 * x) * torch.cos(y) + z**2], dim=-1)


def test_finite_difference_gradient_matches_autograd_on_a_smooth_function():
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(2, 40, 3, dtype=torch.float64, generator=generator), dim=-1)
    radii = 0.3 + 0.6 * torch.rand(2, 40, 1, dtype=torch.float64, generator=generator)
    points = directions * radii  # away from the origin, where the sphere SDF has no gradient
    fd = fd_gradient(smooth(fd_stencil(points, 1e-3)), 1e-3)  # as the objective evaluates it
    auto = torch.stack(
        [torch.autograd.grad(smooth(p := points.clone().requires_grad_(True))[..., c].sum(), p)[0] for c in range(2)],
        dim=2,
    )
    assert fd.shape == (2, 40, 2, 3)
    assert torch.allclose(fd, auto, atol=1e-5)
    # The sphere SDF has unit gradient: its eikonal residual is ~0, the wavy channel's is not.
    only_sphere = torch.tensor([[True, False]] * 2)
    assert eikonal_term(fd, only_sphere) < 1e-8
    assert eikonal_term(fd, torch.ones(2, 2, dtype=torch.bool)) > 1e-3


def test_masked_l1_ignores_absent_classes_even_when_their_targets_are_nan():
    pred = torch.zeros(1, 3, 2, requires_grad=True)
    target = torch.tensor([[[1.0, float("nan")], [1.0, float("nan")], [1.0, float("nan")]]])
    loss = masked_l1(pred, target, torch.tensor([[True, False]]))
    loss.backward()
    assert loss.item() == 1.0
    assert torch.isfinite(pred.grad).all() and pred.grad[..., 1].abs().sum() == 0


def test_iou_uses_inside_as_negative_sdf_and_nan_for_absent():
    target = torch.tensor([[[-1.0, 1.0], [-1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    pred = torch.tensor([[[-1.0, 1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, 1.0]]])
    inter, union = iou_counts(pred, target)
    iou = per_class_iou(inter, union, torch.tensor([[True, False]]))
    assert abs(iou[0, 0].item() - 1 / 3) < 1e-9
    assert torch.isnan(iou[0, 1])
    everything_inside = per_class_iou(*iou_counts(-torch.ones_like(target), target), torch.tensor([[True, True]]))
    assert abs(everything_inside[0, 0].item() - 0.5) < 1e-9


def test_class_weights_weight_the_sdf_and_surface_means_by_structure():
    from vecset.train.losses import masked_l1, surface_term

    pred = torch.tensor([[[1.0, 2.0, 0.0], [3.0, 0.0, 5.0]]])  # (1, 2 points, 3 classes)
    target = torch.zeros_like(pred)
    present = torch.tensor([[True, True, False]])
    assert torch.isclose(masked_l1(pred, target, present), torch.tensor(6.0 / 4))
    assert torch.isclose(masked_l1(pred, target, present, torch.ones(3)), torch.tensor(6.0 / 4))
    # class 1 counted 3 times: (1 + 3 + 3 * (2 + 0)) / (2 + 3 * 2)
    assert torch.isclose(masked_l1(pred, target, present, torch.tensor([1.0, 3.0, 1.0])), torch.tensor(10.0 / 8))
    labels = torch.tensor([[0, 1]])
    assert torch.isclose(surface_term(pred, labels), torch.tensor((1.0 + 0.0) / 2))
    assert torch.isclose(surface_term(pred, labels, torch.tensor([1.0, 3.0, 1.0])), torch.tensor(1.0 / 4))


def test_truncated_l1_costs_nothing_beyond_the_truncation_on_the_right_side_and_keeps_the_wrong_sides_gradient():
    # targets: far outside (twice), near, far inside (twice); truncation 0.1
    pred = torch.tensor([[[0.3], [0.05], [-0.2], [-0.5], [0.2]]], requires_grad=True)
    target = torch.tensor([[[0.5], [0.5], [0.05], [-0.3], [-0.4]]])
    loss = masked_l1(pred, target, torch.tensor([[True]]), truncation=0.1)
    loss.backward()
    # 0 (beyond, right side) + 0.05 (short of 0.1) + 0.25 (near: plain L1) + 0 + 0.3 (wrong side of -0.1)
    assert torch.isclose(loss * 5, torch.tensor(0.6))
    assert torch.equal(pred.grad.flatten() * 5, torch.tensor([0.0, -1.0, -1.0, 0.0, 1.0]))
    # Clamping the prediction too (DeepSDF) would give the last entry 0.2 with no gradient. Untruncated, all count:
    untruncated = masked_l1(pred.detach(), target, torch.tensor([[True]]))
    assert torch.isclose(untruncated * 5, torch.tensor(0.2 + 0.45 + 0.25 + 0.2 + 0.6))


def test_exclusion_is_zero_for_exact_sdfs_of_touching_structures_and_penalises_an_inconsistent_wall():
    """Two slabs sharing a wall at x = 0 (a: x < 0, b: x > 0): their exact SDFs sum to zero, so the truth costs
    nothing; a prediction that pushes a's wall 0.1 into b says every wall point of a is 0.1 deeper than b allows,
    and pays 0.1 there, with a gradient on both present structures and none on an absent one. Points farther than
    the band from the wall cost nothing, whatever the prediction says there."""
    from vecset.settings import WALL_BAND
    from vecset.train.losses import exclusion_term

    points = torch.rand(1, 2000, 3) * 2 - 1
    x = points[..., 0]
    truth = torch.stack([x, -x, torch.full_like(x, 5.0)], dim=-1)
    present = torch.tensor([[True, True, False]])
    assert exclusion_term(truth, truth, present).item() == 0.0
    pred = torch.stack([x - 0.1, -x, torch.full_like(x, -5.0)], dim=-1).requires_grad_(True)
    term = exclusion_term(pred, truth, present)
    assert abs(term.item() - 0.1) < 1e-6, "the inconsistency's depth, averaged over the wall's points"
    term.backward()
    at_wall = x.abs() < WALL_BAND
    assert bool((pred.grad[at_wall][:, :2] < 0).all()) and float(pred.grad[..., 2].abs().sum()) == 0
    assert float(pred.grad[~at_wall].abs().sum()) == 0, "no gradient away from the wall"
    both_inside = torch.full_like(truth, -1.0)  # far from the wall, a prediction inside everything: not this term's
    assert exclusion_term(torch.where(at_wall[..., None], truth, both_inside), truth, present).item() == 0.0
    apart = torch.stack([x + 0.5, 0.3 - x, torch.full_like(x, 5.0)], dim=-1)  # a gap between them: no cost
    assert exclusion_term(apart, truth, present).item() == 0.0
    one = torch.tensor([[True, False, False]])
    assert exclusion_term(pred.detach(), truth, one).item() == 0.0, "one structure: no wall"
