"""The training objective as one module, so DistributedDataParallel sees a single forward per micro-batch."""

from __future__ import annotations

import torch
from torch import nn

from vecset.model.vecset import VecSetAutoEncoder
from vecset.settings import LossWeights
from vecset.train.losses import (
    eikonal_term,
    exclusion_term,
    fd_gradient,
    fd_stencil,
    masked_l1,
    surface_term,
)


class Objective(nn.Module):
    """Wraps the autoencoder; ``forward(batch)`` returns the weighted loss and each term (detached)."""

    class_weights: torch.Tensor | None

    def __init__(
        self,
        model: VecSetAutoEncoder,
        weights: LossWeights,
        eikonal_step: float,
        n_eikonal: int,
        n_vol: int,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.weights = weights
        # (C,) per-structure weights of the SDF and surface terms (LossWeights.thin), or None: all equal
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.eikonal_step = eikonal_step
        self.n_eikonal = n_eikonal
        self.n_vol = n_vol  # a setting, never read from the batch: no host sync, no graph break under compile

    def forward(
        self, batch: dict[str, torch.Tensor], surface: torch.Tensor, latent_points: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and terms of a batch whose encoder input (``encoder_inputs``) is ``surface``/``latent_points``."""
        points, sdf, present = batch["points"], batch["sdf"], batch["present"]
        n_vol = self.n_vol
        n_query, n_surface = points.shape[1], batch["surface_points"].shape[1]
        z, kl = self.model.encode(surface, latent_points)
        context = self.model.latent_context(z)

        # One decoder call for the SDF queries and the surface points.
        pred = self.model.query(context, torch.cat([points, batch["surface_points"]], dim=1)).float()

        w_c = self.class_weights
        terms = {
            "vol": masked_l1(pred[:, :n_vol], sdf[:, :n_vol], present, w_c, self.weights.truncation),
            "near": masked_l1(pred[:, n_vol:n_query], sdf[:, n_vol:n_query], present, w_c, self.weights.truncation),
            "surface": surface_term(pred[:, n_query : n_query + n_surface], batch["surface_labels"], w_c),
            "kl": kl.float(),
            # Logged whatever its weight: how deep the model puts shared walls' points inside both structures.
            "exclusion": exclusion_term(pred[:, :n_query], sdf[:, :n_query].float(), present),
        }
        n_eik = min(self.n_eikonal, n_query - n_vol) if self.weights.eikonal > 0 else 0
        if n_eik:
            # Differences of nearby values need full precision: bf16 keeps ~3 digits, which would swamp them.
            stencil = fd_stencil(points[:, n_vol : n_vol + n_eik], self.eikonal_step)
            with torch.autocast(device_type=points.device.type, enabled=False):
                values = self.model.query(context.float(), stencil.float())
            terms["eikonal"] = eikonal_term(fd_gradient(values, self.eikonal_step), present)
        w = self.weights
        loss = (
            w.vol * terms["vol"]
            + w.near * terms["near"]
            + w.surface * terms["surface"]
            + w.kl * terms["kl"]
            + w.exclusion * terms["exclusion"]
            + (w.eikonal * terms["eikonal"] if n_eik else 0.0)
        )
        return loss, {k: v.detach() for k, v in terms.items()}
