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
from vecset.data.ply import write_ply
from vecset.data.samples import load_samples
from vecset.eval.reconstruct import decode_grid, grid_meshes
from vecset.eval.run import encoding_dataset
from vecset.train.trainer import load_model


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encode_cases(checkpoint: Path, cases: list[tuple[str, Path]], out_dir: Path) -> int:
    """Write ``out_dir``/{case}.npz for every case: the latent set ``z`` (M, D) float32, the case id, the
    normalisation (``center``, ``scale``), and the checkpoint's path, sha256, run, epoch and model config."""
    model, state = load_model(checkpoint)
    dataset = encoding_dataset(model, state, cases)
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
        item = dataset[index]
        with torch.no_grad():
            latent_points = item["latent_points"][None] if "latent_points" in item else None
            z, _ = model.encode(item["surface"][None], latent_points)
        samples = load_samples(path)
        with atomic_path(out_dir / f"{case}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle, z=z[0].numpy().astype(np.float32), case=case, center=samples["center"],
                scale=samples["scale"], **source,
            )  # fmt: skip
    return len(cases)


def decode_latent(latent: Path, checkpoint: Path, out_dir: Path, resolution: int = 64) -> list[Path]:
    """Per-structure meshes (PLY, world mm) of a stored latent set; refuses a latent from another checkpoint."""
    with np.load(latent, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    if str(stored["checkpoint_sha256"]) != file_digest(checkpoint):
        raise ValueError(f"{latent} was encoded by {stored['checkpoint']}, not by {checkpoint}; decode with that one")
    model, state = load_model(checkpoint)
    with torch.no_grad():
        context = model.latent_context(torch.from_numpy(stored["z"])[None])

        def sdf(points: np.ndarray) -> np.ndarray:
            return model.query(context, torch.from_numpy(points).float()[None])[0].numpy()

        grid = decode_grid(sdf, resolution, chunk=32768, desc=f"decode {stored['case']}")
    meshes = grid_meshes(grid, stored["center"], float(stored["scale"]))
    written = []
    for name, mesh in zip(state["class_names"], meshes, strict=True):
        path = Path(out_dir) / f"{name}.ply"
        write_ply(path, mesh.vertices, mesh.faces, comments=[f"case {stored['case']}", f"structure {name}"])
        written.append(path)
    return written


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
