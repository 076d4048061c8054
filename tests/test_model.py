"""The VecSet autoencoder: shapes, presets, parameter count of the upstream size, FPS latents, sign at init."""

from __future__ import annotations

import pytest
import torch

from vecset.model.vecset import FourierEmbed, VecSetAutoEncoder, count_parameters, octave_frames
from vecset.settings import PRESETS, ModelConfig, as_dict, build, preset_config


def test_upstream_preset_has_vecsetx_parameter_count():
    # VecSetX learnable_vec1024x16_dim1024_depth24_nb: ≈425.1 M parameters. Built on the meta device: no memory.
    with torch.device("meta"):
        model = VecSetAutoEncoder(preset_config("upstream", 10))
    assert abs(count_parameters(model) - 425.1e6) / 425.1e6 < 0.01


def test_tiny_preset_is_about_a_million_parameters():
    assert 0.5e6 < count_parameters(VecSetAutoEncoder(preset_config("tiny", 10))) < 2e6


@pytest.mark.parametrize("bottleneck", ["none", "kl", "normalized"])
@pytest.mark.parametrize("latents", ["learnable", "fps"])
def test_forward_shapes_for_every_bottleneck_and_latent_query(bottleneck, latents):
    config = preset_config("tiny", 7, bottleneck=bottleneck, latent_queries=latents, n_latents=16, depth=1)
    model = VecSetAutoEncoder(config)
    surface = torch.cat([torch.rand(2, 64, 3) * 2 - 1, torch.eye(7)[torch.randint(0, 7, (2, 64))]], dim=-1)
    sdf, kl = model(surface, torch.rand(2, 50, 3))
    assert sdf.shape == (2, 50, 7)
    assert (kl > 0) == (bottleneck == "kl")
    sdf.sum().backward()


def test_untrained_model_predicts_both_signs():
    torch.manual_seed(0)
    model = VecSetAutoEncoder(preset_config("tiny", 10))
    surface = torch.cat([torch.rand(2, 256, 3) * 2 - 1, torch.eye(10)[torch.randint(0, 10, (2, 256))]], dim=-1)
    sdf, _ = model(surface, torch.rand(2, 2000, 3) * 2 - 1)
    negative = (sdf < 0).float().mean().item()
    assert 0.05 < negative < 0.95


def test_config_round_trip_and_validation():
    config = preset_config("small", 10)
    assert build(ModelConfig, as_dict(config)) == config
    with pytest.raises(ValueError, match="dim_head"):
        ModelConfig(n_classes=10, width=512, dim_head=256)
    with pytest.raises(ValueError, match=r"unknown ModelConfig key\(s\) \['colour'\]"):
        build(ModelConfig, {"n_classes": 3, "colour": 1})
    with pytest.raises(ValueError, match="unknown model preset"):
        preset_config("huge", 10)
    assert all(preset_config(name, 10).dim_head <= 128 for name in PRESETS)


def test_rotated_fourier_basis_keeps_each_octave_frequency_and_is_rebuilt_identically():
    axes, rotated = FourierEmbed(3, 8, 48).basis, FourierEmbed(3, 8, 48, "rotated").basis
    # Column direction * octaves + octave in both: the same frequency magnitudes in the same places.
    torch.testing.assert_close(rotated.norm(dim=0), axes.norm(dim=0))
    assert (axes != 0).sum(dim=0).max() == 1  # separable by axis
    assert (rotated.abs() > 1e-3).sum(dim=0).min() >= 2  # every direction oblique
    frames = octave_frames(8, "rotated")
    torch.testing.assert_close(frames.transpose(1, 2) @ frames, torch.eye(3).expand(8, 3, 3))
    torch.testing.assert_close(torch.linalg.det(frames), torch.ones(8))
    # Not stored in the state dict: a checkpoint reloaded into a new model must give the same SDF.
    torch.manual_seed(0)
    model = VecSetAutoEncoder(preset_config("tiny", 3, n_latents=8, depth=1, fourier_basis="rotated")).eval()
    reloaded = VecSetAutoEncoder(model.config).eval()
    reloaded.load_state_dict(model.state_dict())
    surface = torch.cat([torch.rand(1, 32, 3) * 2 - 1, torch.eye(3)[torch.randint(0, 3, (1, 32))]], dim=-1)
    points = torch.rand(1, 20, 3) * 2 - 1
    torch.testing.assert_close(reloaded(surface, points)[0], model(surface, points)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="fourier_basis must be one of"):
        ModelConfig(n_classes=3, fourier_basis="random")


def _four_class_model_and_input() -> tuple[VecSetAutoEncoder, torch.Tensor]:
    """A seeded tiny four-structure model (16 latents, one block) in eval mode and one 64-point encoder input."""
    torch.manual_seed(0)
    model = VecSetAutoEncoder(preset_config("tiny", 4, n_latents=16, depth=1)).eval()
    return model, torch.cat([torch.rand(1, 64, 3) * 2 - 1, torch.eye(4)[torch.randint(0, 4, (1, 64))]], dim=-1)


def test_decoder_keys_and_values_computed_once_give_the_same_sdf():
    model, surface = _four_class_model_and_input()
    points = torch.rand(1, 300, 3) * 2 - 1
    with torch.no_grad():
        context = model.latent_context(model.encode(surface)[0])
        kv = model.decoder_key_values(context)
        assert kv[0].shape == (1, model.config.width // model.config.dim_head, 16, model.config.dim_head)
        chunks = torch.cat([model.query(context, points[:, i : i + 100], kv) for i in range(0, 300, 100)], dim=1)
        assert torch.allclose(chunks, model.query(context, points), atol=1e-6)


def test_the_sdf_head_runs_in_fp32_under_bf16_autocast():
    """A distance near zero is a sum of large terms that cancel: bf16 there costs thin structures their Dice."""
    model, surface = _four_class_model_and_input()
    points = torch.rand(1, 500, 3) * 2 - 1
    with torch.no_grad():
        exact = model(surface, points)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(surface, points)[0]
    assert mixed.dtype == torch.float32
    assert (mixed - exact).abs().max() < 0.05 * exact.abs().max()
