"""Latent sets of every case (the input of later generative phases), their statistics and drift, and decoding one,
or a blend of two, back into meshes.

    python -m vecset.eval.latents decode --latent results/latents/demo/demo_000.npz \\
        --checkpoint results/train/demo/checkpoint-best.pt --out recon/demo_000 --spacing-mm 1.0
    python -m vecset.eval.latents blend --a results/latents/demo/demo_000.npz --b results/latents/demo/demo_001.npz \\
        --t 0.5 --checkpoint results/train/demo/checkpoint-best.pt --out recon/blend
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vecset.atomic import atomic_path, write_bytes_atomic
from vecset.data.mesh import Mesh, is_closed, signed_volume
from vecset.data.samples import load_normalisation
from vecset.device import pick_device
from vecset.eval.decode import GridDecoder
from vecset.eval.encoding import encoding_dataset, fitted_latents, latent_sdf, query_chunk
from vecset.eval.reconstruct import extraction, grid_meshes, write_meshes
from vecset.model.checkpoint import load_model
from vecset.plan import RunPlan
from vecset.settings import MAX_GRID, EvalSettings

log = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def encode_cases(
    plan_path: Path,
    checkpoint: Path,
    train_cases: list[tuple[str, Path]],
    val_cases: list[tuple[str, Path]],
    out_dir: Path,
    settings: EvalSettings | None = None,
) -> int:
    """Write ``out_dir``/{case}.npz for every case: the latent set ``z`` (M, D) float32 fitted to the case's
    surface as evaluate fits it (``settings.fit_steps`` and ``fit_proximal``, both recorded), the encoder's own set
    ``z_encoder`` (equal to ``z`` with 0 steps), the case's drift (``relative_change``, ``share_beyond_3sd``:
    :func:`drift`), the case id, the normalisation (``center``, ``scale``), and the checkpoint's path, sha256, run,
    epoch and model config. Beside them ``drift.csv`` (a row per case) and ``stats.npz`` (:func:`latent_stats` over
    the training cases). Cases are encoded ``settings.batch_size`` at a time on the run's device (items read by its
    DataLoader workers), in ``settings.precision`` on a GPU (default: the eval defaults). Returns the case count."""
    settings = settings or EvalSettings()
    cases = train_cases + val_cases
    if any(f"{case}.npz" == STATS_FILE for case, _ in cases):
        raise ValueError(f"a case is named {Path(STATS_FILE).stem!r}, the name of the run's latent statistics beside "
                         "the cases' latent files; rename that case's label map")  # fmt: skip
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
        "fit_proximal": settings.fit_proximal,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, z, encoded in fitted_latents(model, dataset, settings, workers, "encode"):
        case, path = cases[index]
        center, scale = load_normalisation(path, case)
        arrays = {"z": z.cpu().numpy().astype(np.float32), "z_encoder": encoded.cpu().numpy().astype(np.float32)}
        write_npz(out_dir / f"{case}.npz", arrays | {"case": case, "center": center, "scale": scale, **source})
    stats = latent_stats([out_dir / f"{case}.npz" for case, _ in train_cases], source["checkpoint_sha256"])
    write_npz(out_dir / STATS_FILE, stats)
    rows = []
    for case, split in [(case, "train") for case, _ in train_cases] + [(case, "val") for case, _ in val_cases]:
        with np.load(out_dir / f"{case}.npz", allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
        change, beyond = drift(stored["z"], stored["z_encoder"], stats)
        write_npz(out_dir / f"{case}.npz", stored | {"relative_change": change, "share_beyond_3sd": beyond})
        rows.append(f"{case},{split},{change:.4f},{beyond:.4f}\n")
    write_bytes_atomic(out_dir / DRIFT_FILE, ("case,split,relative_change,share_beyond_3sd\n" + "".join(rows)).encode())
    changes = sorted(float(row.split(",")[2]) for row in rows)
    log.info("%d latent sets in %s; the fit moved them by %.3f of their norm (median; largest %.3f), drift.csv",
             len(rows), out_dir, changes[len(changes) // 2], changes[-1])  # fmt: skip
    return len(cases)


STATS_FILE, DRIFT_FILE = "stats.npz", "drift.csv"
BEYOND_SD = 3.0


def write_npz(path: Path, arrays: dict) -> None:
    """``arrays`` as an uncompressed npz at ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def latent_stats(paths: list[Path], checkpoint_sha256: str) -> dict[str, np.ndarray]:
    """Per latent channel (each of the M × D entries of a latent set), the mean and standard deviation over these
    cases' stored sets, for ``z_encoder`` and for ``z`` (read one file at a time: 1000 cases fit in no memory budget
    at the upstream width), with the case count and the checkpoint's sha256."""
    if not paths:
        raise ValueError("no training case to compute latent statistics over; check the split")
    sums: dict[str, np.ndarray] = {}
    for path in paths:
        with np.load(path, allow_pickle=False) as npz:
            for key in ("z", "z_encoder"):
                value = npz[key].astype(np.float64)
                for name, term in ((key, value), (key + "_sq", value**2)):
                    sums[name] = sums[name] + term if name in sums else term
    n = len(paths)
    stats: dict[str, np.ndarray] = {"n_cases": np.asarray(n), "checkpoint_sha256": np.asarray(checkpoint_sha256)}
    for key in ("z", "z_encoder"):
        mean = sums[key] / n
        stats[f"{key}_mean"] = mean.astype(np.float32)
        stats[f"{key}_std"] = np.sqrt(np.maximum(sums[key + "_sq"] / n - mean**2, 0.0)).astype(np.float32)
    return stats


def drift(z: np.ndarray, z_encoder: np.ndarray, stats: dict[str, np.ndarray]) -> tuple[float, float]:
    """How far a fitted latent set moved: ``‖z − z_encoder‖ / ‖z_encoder‖``, and the share of its channels more than
    3 standard deviations from the training cases' encoder latent sets' mean (per-channel z-scores)."""
    change = float(np.linalg.norm(z - z_encoder) / max(float(np.linalg.norm(z_encoder)), 1e-12))
    scores = np.abs(z - stats["z_encoder_mean"]) / np.maximum(stats["z_encoder_std"], 1e-6)
    return change, float((scores > BEYOND_SD).mean())


LATENT_FILE_KEYS = ("case", "z", "center", "scale", "checkpoint", "checkpoint_sha256")
LATENT_FIX = "decode a file that encode wrote (results/latents/<run>/<case>.npz), or rerun encode"


def read_latent(latent: Path, checkpoint: Path) -> dict[str, np.ndarray]:
    """A stored latent file's arrays; one line naming the file for a missing, torn, foreign or misshapen one, and
    for one encoded by another checkpoint."""
    try:
        with np.load(latent, allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ValueError(f"{latent}: no such latent file; fix: {LATENT_FIX}") from None
    except Exception as err:  # torn zip, object arrays, not an npz: many types, some advising an unsafe load
        raise ValueError(f"{latent}: not a readable latent file ({type(err).__name__}); fix: {LATENT_FIX}") from None
    missing = [k for k in LATENT_FILE_KEYS if k not in stored]
    if missing:
        raise ValueError(f"{latent}: not a latent file of this workflow (missing {missing}); fix: {LATENT_FIX}")
    numeric = all(stored[k].dtype.kind in "fiu" for k in ("z", "center", "scale"))
    if not numeric or stored["scale"].size != 1:
        raise ValueError(f"{latent}: its z, center or scale is not numeric or misshapen; fix: {LATENT_FIX}")
    if str(stored["checkpoint_sha256"]) != file_digest(checkpoint):
        raise ValueError(f"{latent} was encoded by {stored['checkpoint']}, not by {checkpoint}; decode with that one")
    return stored


def check_latent_set(z: np.ndarray, center: np.ndarray, scale: float, shape: tuple[int, int], source: str) -> None:
    """Refuse, in one line naming ``source``, what no decoding can make sense of: a latent set of another shape
    than the model's, values that are not finite, a centre that is not three finite mm, a scale that is not a
    positive finite mm (a negative one would mirror every mesh)."""
    z, center = np.asarray(z), np.asarray(center)
    if z.dtype.kind not in "fiu" or center.dtype.kind not in "fiu":
        problem = "latent set or centre is not numeric"
    elif z.shape != shape:
        problem = f"latent set of shape {z.shape}, the checkpoint's model takes {shape}"
    elif not np.all(np.isfinite(z)):
        problem = f"latent set holds {int((~np.isfinite(z)).sum())} values that are not finite"
    elif center.shape != (3,) or not np.all(np.isfinite(center)):
        problem = f"centre {center.tolist()} is not three finite mm"
    elif not (math.isfinite(scale) and scale > 0):
        problem = f"scale {scale} is not a positive number of mm"
    else:
        return
    raise ValueError(f"{source}: {problem}; fix: {LATENT_FIX}")


class LatentDecoder:
    """A checkpoint's model on a device, decoding latent sets into per-structure meshes (world mm) as ``settings``
    say (default: the eval defaults)."""

    def __init__(self, checkpoint: Path, settings: EvalSettings | None = None, device: str = "auto") -> None:
        placed = pick_device(device)  # type: ignore[arg-type]
        self.model, state = load_model(checkpoint, placed)
        self.names = [str(n) for n in state["class_names"]]
        self.settings = settings or EvalSettings()
        self.grid = GridDecoder(self.settings, placed, query_chunk(self.model, placed))

    def meshes(self, z: np.ndarray, center: np.ndarray, scale: float, desc: str) -> list[Mesh]:
        """Each structure's mesh (world mm) of one latent set; refuses a latent set check_latent_set refuses, and
        one whose decoding holds no surface of any structure."""
        check_latent_set(z, center, scale, self.model.latent_shape, desc)
        sdf = latent_sdf(self.model, torch.from_numpy(np.asarray(z, dtype=np.float32)), self.settings.precision)
        decoded = self.grid.decode(sdf, scale, desc=desc).values
        meshes = grid_meshes(extraction(decoded, self.settings).mesh_fields, center, scale)
        if not any(mesh.n_faces for mesh in meshes):
            raise ValueError(
                f"{desc}: no structure's surface in the decoded grid: the latent set is far from any the model was "
                f"trained on; fix: {LATENT_FIX}"
            )
        return meshes


def decode_latent(
    latent: Path, checkpoint: Path, out_dir: Path, settings: EvalSettings | None = None, device: str = "auto"
) -> list[Path]:
    """Per-structure meshes (PLY, world mm) of a stored latent set, decoded as ``settings`` say (default: the
    eval defaults); refuses a latent from another checkpoint."""
    stored = read_latent(latent, checkpoint)
    decoder = LatentDecoder(checkpoint, settings, device)
    case = str(stored["case"])
    meshes = decoder.meshes(stored["z"], stored["center"], float(stored["scale"]), f"decode {latent} ({case})")
    return write_meshes(out_dir, case, decoder.names, meshes)


@dataclass(frozen=True)
class BlendedStructure:
    """One structure present in both cases' decodings: its volumes (mm³) in case a, in the blend and in case b,
    whether the blend's mesh is closed, and whether its volume lies between the two cases'."""

    structure: str
    volume_a: float
    volume_blend: float
    volume_b: float
    closed: bool

    @property
    def between(self) -> bool:
        return min(self.volume_a, self.volume_b) <= self.volume_blend <= max(self.volume_a, self.volume_b)


def blend_latents(
    a: Path,
    b: Path,
    t: float,
    checkpoint: Path,
    out_dir: Path,
    key: str = "z",
    settings: EvalSettings | None = None,
    device: str = "auto",
) -> list[BlendedStructure]:
    """Decode the blend ``(1 − t) · a + t · b`` of two stored latent sets (``key``: the fitted ``z`` or the encoder's
    ``z_encoder``; the normalisation blended alike) into ``out_dir`` as per-structure meshes (world mm), and decode
    both cases too: for each structure present in both, the three volumes and whether the blend's mesh is closed."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"--t must be in [0, 1], got {t}")
    first, second = read_latent(a, checkpoint), read_latent(b, checkpoint)
    decoder = LatentDecoder(checkpoint, settings, device)

    def mix(name: str) -> np.ndarray:
        return (1.0 - t) * first[name].astype(np.float64) + t * second[name].astype(np.float64)

    ends = [
        decoder.meshes(s[key], s["center"], float(s["scale"]), f"decode {path} ({s['case']})")
        for s, path in ((first, a), (second, b))
    ]
    blend = decoder.meshes(mix(key), mix("center"), float(mix("scale")), f"decode the blend t={t:g}")
    write_meshes(out_dir, f"{first['case']} to {second['case']} at t={t:g}", decoder.names, blend)
    return [
        BlendedStructure(name, mesh_volume(ma), mesh_volume(mt), mesh_volume(mb), is_closed(mt.faces))
        for name, ma, mt, mb in zip(decoder.names, ends[0], blend, ends[1], strict=True)
        if ma.n_faces and mb.n_faces
    ]


def mesh_volume(mesh: Mesh) -> float:
    return abs(signed_volume(mesh.vertices, mesh.faces))


def blend_report(structures: list[BlendedStructure], t: float) -> str:
    """A line per structure and a last line that names any structure not closed or not between the two cases."""
    lines = [f"{'structure':<24} {'volume a':>12} {'blend':>12} {'volume b':>12}  closed  between"]
    lines += [
        f"{s.structure:<24} {s.volume_a:>12.0f} {s.volume_blend:>12.0f} {s.volume_b:>12.0f}  {s.closed!s:<6}  "
        f"{s.between}"
        for s in structures
    ]
    faults = [f"{s.structure} not closed" for s in structures if not s.closed]
    faults += [f"{s.structure} not between" for s in structures if not s.between]
    verdict = "; ".join(faults) if faults else "every one closed, its volume between the two cases'"
    lines.append(f"blend at t={t:g}: {len(structures)} structure(s) present in both cases: {verdict}")
    return "\n".join(lines)


def _grid_points(text: str) -> int:
    """A grid's points per axis from the command line, within the config's bounds."""
    value = int(text)
    if not 8 <= value <= MAX_GRID:
        raise argparse.ArgumentTypeError(f"{value} is outside 8..{MAX_GRID} (the grid takes classes × R³ × 4 bytes)")
    return value


def _positive_mm(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of mm")
    return value


def _decoding_options(parser: argparse.ArgumentParser) -> None:
    defaults = EvalSettings()
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resolution", type=_grid_points, default=defaults.resolution, help="grid points per axis")
    parser.add_argument(
        "--spacing-mm", type=_positive_mm, default=None, help="grid spacing in mm (wins over resolution)"
    )
    parser.add_argument("--max-resolution", type=_grid_points, default=defaults.max_resolution)
    parser.add_argument("--dense", action="store_true", help="decode every grid point (no coarse-to-fine)")
    parser.add_argument(
        "--partition",
        action=argparse.BooleanOptionalAction,
        default=defaults.partition,
        help="every structure from one partition of space (eval.partition; --no-partition: each from its own SDF)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser("decode", help="meshes from one stored latent set")
    decode.add_argument("--latent", type=Path, required=True)
    _decoding_options(decode)
    blend = sub.add_parser("blend", help="meshes from the blend (1 - t) a + t b of two cases' latent sets")
    blend.add_argument("--a", type=Path, required=True, help="a latent file (results/latents/<run>/<case>.npz)")
    blend.add_argument("--b", type=Path, required=True, help="another case's, from the same checkpoint")
    blend.add_argument("--t", type=float, default=0.5, help="0: case a, 1: case b")
    blend.add_argument("--key", choices=["z", "z_encoder"], default="z", help="the fitted or the encoder's sets")
    _decoding_options(blend)
    args = parser.parse_args(argv)
    settings = EvalSettings(
        resolution=args.resolution, spacing_mm=args.spacing_mm, max_resolution=args.max_resolution,
        coarse_to_fine=not args.dense, partition=args.partition,
    )  # fmt: skip
    try:
        if args.command == "blend":
            structures = blend_latents(args.a, args.b, args.t, args.checkpoint, args.out, args.key, settings,
                                       args.device)  # fmt: skip
            print(f"wrote the blend's meshes to {args.out}")
            print(blend_report(structures, args.t))
            return 0
        paths = decode_latent(args.latent, args.checkpoint, args.out, settings, args.device)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} meshes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
