"""Latent sets of every case (the input of later generative phases) and decoding one back into meshes.

    python -m vecset.eval.latents decode --latent results/latents/demo/demo_000.npz \\
        --checkpoint results/train/demo/checkpoint-best.pt --out recon/demo_000 --spacing-mm 1.0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from vecset.atomic import atomic_path
from vecset.data.samples import load_normalisation
from vecset.device import pick_device
from vecset.eval.decode import GridDecoder
from vecset.eval.encoding import encoding_dataset, fitted_latents, latent_sdf, query_chunk
from vecset.eval.reconstruct import grid_meshes, write_meshes
from vecset.model.checkpoint import load_model
from vecset.plan import RunPlan
from vecset.settings import EvalSettings


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def encode_cases(
    plan_path: Path,
    checkpoint: Path,
    cases: list[tuple[str, Path]],
    out_dir: Path,
    settings: EvalSettings | None = None,
) -> int:
    """Write ``out_dir``/{case}.npz for every case: the latent set ``z`` (M, D) float32 fitted to the case's
    surface as evaluate fits it (``settings.fit_steps``, recorded as ``fit_steps``), the encoder's own set
    ``z_encoder`` (equal to ``z`` with 0 steps; the fit moves a set by about a third of its norm, so a generative
    model may learn either), the case id, the normalisation (``center``, ``scale``), and the checkpoint's path,
    sha256, run, epoch and model config. Cases are encoded ``settings.batch_size`` at a time on the run's device
    (items read by its DataLoader workers), in ``settings.precision`` on a GPU (default: the eval defaults)."""
    settings = settings or EvalSettings()
    plan = RunPlan.read(plan_path)
    device = pick_device(plan.train.device)
    model, state = load_model(checkpoint, device)
    dataset = encoding_dataset(model, plan, cases)
    workers = plan.train.loader_workers(device.type == "cuda")
    source = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_digest(checkpoint),
        "run": state.get("run_name", ""),
        "epoch": state["epoch"],
        "model_config": json.dumps(state["model_config"], sort_keys=True),
        "class_names": np.asarray(state["class_names"]),
        "fit_steps": settings.fit_steps,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, z, encoded in fitted_latents(model, dataset, settings, workers, "encode"):
        case, path = cases[index]
        center, scale = load_normalisation(path)
        with atomic_path(out_dir / f"{case}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle, z=z.cpu().numpy().astype(np.float32), z_encoder=encoded.cpu().numpy().astype(np.float32),
                case=case, center=center, scale=scale, **source,
            )  # fmt: skip
    return len(cases)


def decode_latent(
    latent: Path, checkpoint: Path, out_dir: Path, settings: EvalSettings | None = None, device: str = "auto"
) -> list[Path]:
    """Per-structure meshes (PLY, world mm) of a stored latent set, decoded as ``settings`` say (default: the
    eval defaults); refuses a latent from another checkpoint."""
    with np.load(latent, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    if str(stored["checkpoint_sha256"]) != file_digest(checkpoint):
        raise ValueError(f"{latent} was encoded by {stored['checkpoint']}, not by {checkpoint}; decode with that one")
    placed = pick_device(device)  # type: ignore[arg-type]
    model, state = load_model(checkpoint, placed)
    settings = settings or EvalSettings()
    sdf = latent_sdf(model, torch.from_numpy(stored["z"]), settings.precision)
    decoder = GridDecoder(settings, placed, query_chunk(model, placed))
    scale = float(stored["scale"])
    grid = decoder.decode(sdf, scale, desc=f"decode {stored['case']}")
    meshes = grid_meshes(grid.values, stored["center"], scale)
    return write_meshes(out_dir, str(stored["case"]), [str(n) for n in state["class_names"]], meshes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser("decode", help="meshes from one stored latent set")
    decode.add_argument("--latent", type=Path, required=True)
    decode.add_argument("--checkpoint", type=Path, required=True)
    decode.add_argument("--out", type=Path, required=True)
    defaults = EvalSettings()
    decode.add_argument("--resolution", type=int, default=defaults.resolution, help="grid points per axis")
    decode.add_argument("--spacing-mm", type=float, default=None, help="grid spacing in mm (wins over resolution)")
    decode.add_argument("--max-resolution", type=int, default=defaults.max_resolution)
    decode.add_argument("--dense", action="store_true", help="decode every grid point (no coarse-to-fine)")
    decode.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args(argv)
    settings = EvalSettings(
        resolution=args.resolution, spacing_mm=args.spacing_mm, max_resolution=args.max_resolution,
        coarse_to_fine=not args.dense,
    )  # fmt: skip
    try:
        paths = decode_latent(args.latent, args.checkpoint, args.out, settings, args.device)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} meshes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
