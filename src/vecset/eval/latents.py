"""Latent sets of every case (the input of later generative phases) and decoding one back into meshes.

    python -m vecset.eval.latents decode --latent results/latents/demo/demo_000.npz \\
        --checkpoint results/train/demo/checkpoint-best.pt --out recon/demo_000 --resolution 64
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
from vecset.eval.encoding import encode_item, encoding_dataset, latent_sdf
from vecset.eval.reconstruct import decode_grid, grid_meshes, write_meshes
from vecset.model.checkpoint import load_model
from vecset.plan import RunPlan


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def encode_cases(plan_path: Path, checkpoint: Path, cases: list[tuple[str, Path]], out_dir: Path) -> int:
    """Write ``out_dir``/{case}.npz for every case: the latent set ``z`` (M, D) float32, the case id, the
    normalisation (``center``, ``scale``), and the checkpoint's path, sha256, run, epoch and model config."""
    model, state = load_model(checkpoint)
    dataset = encoding_dataset(model, RunPlan.read(plan_path), cases)
    source = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_digest(checkpoint),
        "run": state.get("run_name", ""),
        "epoch": state["epoch"],
        "model_config": json.dumps(state["model_config"], sort_keys=True),
        "class_names": np.asarray(state["class_names"]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, (case, path) in enumerate(cases):
        z = encode_item(model, dataset[index], dataset.settings)
        center, scale = load_normalisation(path)
        with atomic_path(out_dir / f"{case}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle, z=z.numpy().astype(np.float32), case=case, center=center, scale=scale, **source
            )  # fmt: skip
    return len(cases)


def decode_latent(latent: Path, checkpoint: Path, out_dir: Path, resolution: int = 64) -> list[Path]:
    """Per-structure meshes (PLY, world mm) of a stored latent set; refuses a latent from another checkpoint."""
    with np.load(latent, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    if str(stored["checkpoint_sha256"]) != file_digest(checkpoint):
        raise ValueError(f"{latent} was encoded by {stored['checkpoint']}, not by {checkpoint}; decode with that one")
    model, state = load_model(checkpoint)
    sdf = latent_sdf(model, torch.from_numpy(stored["z"]))
    grid = decode_grid(sdf, resolution, chunk=32768, desc=f"decode {stored['case']}")
    meshes = grid_meshes(grid, stored["center"], float(stored["scale"]))
    return write_meshes(out_dir, str(stored["case"]), [str(n) for n in state["class_names"]], meshes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser("decode", help="meshes from one stored latent set")
    decode.add_argument("--latent", type=Path, required=True)
    decode.add_argument("--checkpoint", type=Path, required=True)
    decode.add_argument("--out", type=Path, required=True)
    decode.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        paths = decode_latent(args.latent, args.checkpoint, args.out, args.resolution)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} meshes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
