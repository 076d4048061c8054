"""The research log's routes (../shared/seed/), reimplemented only as the baselines our benchmarks run beside the
package in the same run, and kept here, in one place, so that no benchmark carries its own copy.

Preprocessing (bench/preprocess.py): marching cubes on each full-volume mask in voxel indices (no crop, no
padding, no affine), trimesh surface samples, and an "SDF" that is the distance to the nearest surface sample
signed by that sample's normal (the approximation the design replaces with the exact distance).

Training (bench/train_step.py): the seed's attention (the full (B, H, Nq, Nk) score matrix in memory, its fix for
the missing double backward of fused kernels) and its eikonal term by autograd with ``create_graph=True``, on a
synthetic batch of the production item's sizes (the seed had no loader).

Nothing here is used by the workflow; the package never imports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import marching_cubes

from vecset.data.mesh import signed_volume

VoxelMesh = tuple[np.ndarray, np.ndarray]  # (vertices in voxel indices, faces)
Cloud = tuple[np.ndarray, np.ndarray]  # (surface samples, their face normals), voxel units

# --- preprocessing --------------------------------------------------------------------------------------------


def seed_mesh(mask: np.ndarray) -> VoxelMesh | None:
    """Marching cubes on a full-volume mask in voxel indices (level 0.5), faces turned outward by the sign of the
    enclosed volume (so the seed's sign is not penalised for a winding convention); None for an empty mask."""
    if not mask.any():
        return None
    verts, faces, _, _ = marching_cubes(mask, level=0.5)
    if signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    return verts.astype(np.float64), faces.astype(np.int64)


def seed_samples(meshes: list[VoxelMesh | None], n: int, seed: int) -> list[Cloud | None]:
    """trimesh surface samples and their face normals; ``n`` in all, shared among structures by area."""
    import trimesh  # imported where used: only the seed's process pays for it in memory

    tmeshes = [None if m is None else trimesh.Trimesh(*m, process=False) for m in meshes]
    areas = np.array([0.0 if t is None else t.area for t in tmeshes])
    counts = np.maximum(np.round(n * areas / areas.sum()).astype(int), areas > 0)
    clouds: list[Cloud | None] = []
    for c, (tm, count) in enumerate(zip(tmeshes, counts, strict=True)):
        if tm is None:
            clouds.append(None)
            continue
        points, face_index = trimesh.sample.sample_surface(tm, int(count), seed=[seed, c])
        clouds.append((np.asarray(points), tm.face_normals[face_index]))
    return clouds


def seed_sdf(points_vox: np.ndarray, cloud: Cloud | None, workers: int) -> np.ndarray:
    """Distance to the nearest surface sample, signed by that sample's normal (voxel units); NaN when absent."""
    from scipy.spatial import cKDTree

    if cloud is None:
        return np.full(len(points_vox), np.nan)
    samples, normals = cloud
    dist, idx = cKDTree(samples).query(points_vox, workers=workers)
    outside = np.einsum("ij,ij->i", points_vox - samples[idx], normals[idx]) >= 0
    return np.where(outside, dist, -dist)


# --- training ---------------------------------------------------------------------------------------------------


def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **_: object) -> torch.Tensor:
    """The seed's attention: the full (B, H, Nq, Nk) matrix in memory (its fix for the double-backward error)."""
    weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return weights.softmax(dim=-1) @ v


@contextlib.contextmanager
def seed_attention() -> Iterator[None]:
    """Inside the block, the model's attention is the seed's (:func:`manual_attention`)."""
    import vecset.model.vecset as vecset_module

    original = vecset_module.F.scaled_dot_product_attention
    vecset_module.F.scaled_dot_product_attention = manual_attention  # type: ignore[assignment]
    try:
        yield
    finally:
        vecset_module.F.scaled_dot_product_attention = original


def synthetic_batch(plan: Any, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random points, one-hot labels and SDF targets of the plan's item sizes (the seed had no loader)."""
    s, c = plan.train.items, len(plan.class_names)
    g = torch.Generator().manual_seed(0)
    n_query = s.n_vol + s.n_near
    labels = torch.randint(0, c, (batch, s.n_input), generator=g)
    values = {
        "surface": torch.cat([torch.rand(batch, s.n_input, 3, generator=g) * 2 - 1, F.one_hot(labels, c)], -1),
        "points": torch.rand(batch, n_query, 3, generator=g) * 2 - 1,
        "sdf": torch.randn(batch, n_query, c, generator=g) * 0.2,
        "n_vol": torch.full((batch,), s.n_vol),
        "surface_points": torch.rand(batch, s.n_surface_loss, 3, generator=g) * 2 - 1,
        "surface_labels": torch.randint(0, c, (batch, s.n_surface_loss), generator=g),
        "present": torch.ones(batch, c, dtype=torch.bool),
    }
    return {k: v.float().to(device) if v.is_floating_point() else v.to(device) for k, v in values.items()}


def seed_loss(model: Any, batch: dict[str, torch.Tensor], n_eikonal: int) -> torch.Tensor:
    """The seed's objective: our data terms, the eikonal term by autograd with create_graph=True (double backward),
    on one gradient as for the seed's single union-SDF channel (ours gets all C channels' gradients)."""
    from vecset.train.losses import eikonal_term, masked_l1, surface_term

    points = batch["points"].clone().requires_grad_(True)
    n_vol, n_query = int(batch["n_vol"][0]), points.shape[1]
    z, _ = model.encode(batch["surface"])
    context = model.latent_context(z)
    pred = model.query(context, torch.cat([points, batch["surface_points"]], dim=1)).float()
    loss = masked_l1(pred[:, :n_vol], batch["sdf"][:, :n_vol], batch["present"])
    loss = loss + masked_l1(pred[:, n_vol:n_query], batch["sdf"][:, n_vol:n_query], batch["present"])
    loss = loss + surface_term(pred[:, n_query:], batch["surface_labels"])
    eik = pred[:, n_vol : n_vol + n_eikonal].min(dim=-1).values
    gradient = torch.autograd.grad(eik.sum(), points, create_graph=True)[0][:, n_vol : n_vol + n_eikonal, None]
    return loss + 0.1 * eikonal_term(gradient, batch["present"][:, :1])
