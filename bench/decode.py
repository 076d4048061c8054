"""Decoding benchmark: coarse-to-fine against dense decoding of the same latents, through the evaluation's own
per-case path (decode, marching cubes, label map on the input grid, metrics), with the run's trained model.

Settings compared, each dense and coarse-to-fine on the same latent set:
- the demo at 128³ (129³ after rounding): the validation cases of the demo run (results/splits/val.csv,
  results/train/demo/checkpoint-best.pt; run `snakemake --cores 2` first);
- the real-data setting: a real-size phantom (512×512×256, ~0.4 mm, like ImageCAS) meshed and sampled as the
  workflow does, encoded by the same model and decoded at --spacing-mm (0.5 mm: CT), the grid derived from the
  case's size.

Per case: decoded points, decode time and whole-case evaluation time of each, and the largest change of any
structure's Dice against the input label map. It also measures the model's SDF slope (the gradient norm by
central differences on the dense 128³ grid, within two cells of a zero level and anywhere), the figure the
coarse-to-fine refine_slope has to bound, and on a GPU how far bf16 moves each case's grid from fp32. Medians
over cases; ratios dense / coarse-to-fine. The last line:
`coarse-to-fine: <R>x fewer decoded points, max Dice change <D>` (R: the demo median at 128³, or the median of
all cases without demo cases; D: the largest change over every case of both settings).

With --production an untrained model of config/imagecas.yaml's run (the upstream preset, 425 M parameters,
and its encoder input) also decodes the real-size cases: its times are the production model's (its SDF has no
structure, so coarse-to-fine refines everywhere and its dense time is the bound), and the estimate of a
production case combines them with the trained model's coarse-to-fine share and its non-decoding work on the
same case: it ends with the time 200 validation cases would take. bench/gpu.sh runs that on a GPU.

    python bench/decode.py                        # 10 demo cases + 1 real-size case, 2 threads
    python bench/decode.py --cases 2 --real 0     # a quick run
    python bench/decode.py --device cuda --production --cases 0   # production-model times on a GPU (bf16)
    python bench/decode.py --smoke [--run DIR]    # CPU smoke run (tests/test_benches.py): one demo-size phantom at
                                                  # 4 mm, DIR's model and an untrained tiny production model
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vecset.config import validate_config
from vecset.data.phantom import write_phantom
from vecset.data.preprocess import preprocess_case
from vecset.data.samples import load_normalisation
from vecset.data.split import read_split_csv
from vecset.eval.case import evaluate_case
from vecset.eval.decode import GridDecoder, SdfFunction, decode_dense
from vecset.eval.encoding import encode_batch, encode_dataset, latent_sdf, query_chunk
from vecset.model.checkpoint import load_model
from vecset.model.items import SampleDataset
from vecset.model.vecset import VecSetAutoEncoder, count_parameters
from vecset.plan import RunPlan
from vecset.settings import IMAGECAS_LABELS, Config, EvalPrecision, EvalSettings, ItemSettings, ModelConfig, build

from benchlib import configured_run

# The encoder reads only a case's surface points: the real-size case needs few SDF queries.
REAL_CASE_CONFIG = build(Config, validate_config({"samples": {"n_volume": 1000, "n_near": 1000}}))


def production_run(preset: str | None) -> tuple[ModelConfig, ItemSettings]:
    """The model and the items of config/imagecas.yaml's run (with another preset, when named)."""
    run = configured_run(True, {"preset": preset} if preset else None)
    return run.train.model_config(len(IMAGECAS_LABELS)), run.train.items


@dataclass
class Compared:
    setting: str
    case: str
    resolution: int
    dense_points: int
    fine_points: int
    dense_decode_s: float
    fine_decode_s: float
    dense_case_s: float
    fine_case_s: float
    dice_change: float
    worst_structure: str


class DecodeTimer:
    """Wraps a GridDecoder to record what its last decoding cost."""

    def __init__(self, decoder: GridDecoder) -> None:
        self.decoder, self.points, self.seconds = decoder, 0, 0.0

    @property
    def settings(self) -> EvalSettings:
        return self.decoder.settings

    def resolution(self, scale: float) -> int:
        return self.decoder.resolution(scale)

    def decode(self, sdf: SdfFunction, scale: float, desc: str | None = None):
        started = time.perf_counter()
        grid = self.decoder.decode(sdf, scale, desc)
        self.seconds, self.points = time.perf_counter() - started, grid.decoded_points
        return grid


def compare(setting, case, sdf, center, scale, label_path, settings, device, chunk, out, score=True) -> Compared:
    """Evaluate one case twice (dense, coarse-to-fine) on the same SDF; what each cost and the Dice change.
    Without ``score``, only decode it (an untrained model's reconstruction is not worth scoring)."""
    runs = {}
    for name, c2f in (("dense", False), ("fine", True)):
        timer = DecodeTimer(GridDecoder(replace(settings, coarse_to_fine=c2f), device, chunk))
        started = time.perf_counter()
        if score:
            scores = evaluate_case(case, sdf, center, scale, label_path, IMAGECAS_LABELS, timer, out / name / case)  # type: ignore[arg-type]
            rows = scores.metrics
        else:
            rows = []
            timer.decode(sdf, scale)
        runs[name] = (rows, timer.points, timer.seconds, time.perf_counter() - started)
    dense, fine = runs["dense"], runs["fine"]
    changes = {
        a["structure"]: abs(a["dice"] - b["dice"])
        for a, b in zip(dense[0], fine[0], strict=True)
        if np.isfinite(a["dice"]) and np.isfinite(b["dice"])
    }
    worst = max(changes, key=changes.get) if changes else "(not scored)"  # type: ignore[arg-type]
    return Compared(setting, case, timer.resolution(scale), dense[1], fine[1], dense[2], fine[2], dense[3],
                    fine[3], changes.get(worst, float("nan")), worst)  # fmt: skip


def slope(sdf: SdfFunction, resolution: int, device: torch.device, chunk: int) -> tuple[float, float]:
    """(largest |∇f| within two cells of a zero level, largest anywhere) on the dense grid (central differences)."""
    v = decode_dense(sdf, resolution, chunk, device).values
    h = 2.0 / (resolution - 1)
    inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    g = torch.stack([
        v[:, 2:, 1:-1, 1:-1] - v[:, :-2, 1:-1, 1:-1],
        v[:, 1:-1, 2:, 1:-1] - v[:, 1:-1, :-2, 1:-1],
        v[:, 1:-1, 1:-1, 2:] - v[:, 1:-1, 1:-1, :-2],
    ]).norm(dim=0) / (2 * h)  # fmt: skip
    near = v[inner].abs() < 2 * h
    return float(g[near].max()), float(g.max())


def precision_dice(model: VecSetAutoEncoder, z: torch.Tensor, resolution: int, chunk: int) -> float:
    """The smallest Dice, over structures, between the insides of the dense grid decoded in bf16 and in fp32."""
    precisions: tuple[EvalPrecision, ...] = ("bf16", "fp32")
    grids = [decode_dense(latent_sdf(model, z, p), resolution, chunk, z.device).values < 0 for p in precisions]
    dice = [float(2 * (a & b).sum() / (a.sum() + b.sum())) for a, b in zip(*grids, strict=True) if a.any() or b.any()]
    return min(dice)


def real_case(folder: Path, seed: int, size: str) -> tuple[str, Path, Path]:
    """A phantom's label map (real size: 512×512×256, ~0.4 mm) and its sample file, made as the workflow's mesh and
    sample rules make them (vecset.data.preprocess.preprocess_case)."""
    case = f"real_{seed:03d}"
    labels = folder / f"{case}.nii.gz"
    folder.mkdir(parents=True, exist_ok=True)
    write_phantom(labels, [0, seed], IMAGECAS_LABELS, size=size)
    samples = preprocess_case(labels, case, folder / f"{case}.npz", REAL_CASE_CONFIG, threads=2)
    return case, labels, samples


def encoding_time(model: VecSetAutoEncoder, dataset: SampleDataset, batch: int) -> float:
    """Seconds per case of encoding ``batch`` copies of the first case at once (after one warm-up batch)."""
    surface = dataset[0]["surface"][None].expand(batch, -1, -1)
    encode_batch(model, surface, dataset.settings)
    if surface.device.type == "cuda" or next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    encode_batch(model, surface, dataset.settings).cpu()
    return (time.perf_counter() - started) / batch


def table(rows: list[Compared]) -> str:
    head = (
        f"{'setting':<28} {'case':<9} {'grid':>5} {'decoded dense':>13} {'c2f':>10} {'fewer':>6} "
        f"{'decode dense s':>14} {'c2f s':>6} {'case dense s':>12} {'c2f s':>6} {'max dDice':>9}  worst"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.setting:<28} {r.case:<9} {r.resolution:>5} {r.dense_points:>13,} {r.fine_points:>10,} "
            f"{r.dense_points / r.fine_points:>5.1f}x {r.dense_decode_s:>14.2f} {r.fine_decode_s:>6.2f} "
            f"{r.dense_case_s:>12.2f} {r.fine_case_s:>6.2f} {r.dice_change:>9.5f}  {r.worst_structure}"
        )
    for setting in dict.fromkeys(r.setting for r in rows):
        group = [r for r in rows if r.setting == setting]
        med = statistics.median
        lines.append(
            f"{setting:<28} {'median':<9} {group[0].resolution:>5} {'':>13} {'':>10} "
            f"{med(r.dense_points / r.fine_points for r in group):>5.1f}x "
            f"{med(r.dense_decode_s for r in group):>14.2f} {med(r.fine_decode_s for r in group):>6.2f} "
            f"{med(r.dense_case_s for r in group):>12.2f} {med(r.fine_case_s for r in group):>6.2f} "
            f"{max(r.dice_change for r in group):>9.5f}  (max)"
        )
    return "\n".join(lines)


def evaluate_cases(
    label, model, items, seed, cases, args, device, out, score=True
) -> tuple[list[Compared], list, float]:
    """Every case dense and coarse-to-fine with one model (scored, or only decoded): the rows, the slopes of
    the demo cases, and the seconds per case of encoding --batch cases at once."""
    chunk = query_chunk(model, device)
    print(f"{label}: {count_parameters(model) / 1e6:.1f} M parameters on {device}, {chunk} query points per "
          "decoder call", file=sys.stderr)  # fmt: skip
    dataset = SampleDataset([(c[0], c[1]) for c in cases], len(IMAGECAS_LABELS), items, False, seed=seed)
    encode_s = encoding_time(model, dataset, args.batch)
    rows, slopes = [], []
    for index, z in encode_dataset(model, dataset, batch_size=args.batch):
        case, samples, labels, settings, name = cases[index]
        sdf = latent_sdf(model, z)
        center, scale = load_normalisation(samples, case)
        rows.append(compare(f"{label} {name}", case, sdf, center, scale, labels, settings, device, chunk, out, score))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr)
        if settings.spacing_mm is None:
            slopes.append(slope(sdf, GridDecoder(settings).resolution(scale), device, chunk))
        if score and device.type == "cuda":
            resolution = GridDecoder(settings).resolution(scale)
            print(f"{label} {case}: bf16 against fp32 at {resolution}³, smallest grid Dice "
                  f"{precision_dice(model, z.to(device), resolution, chunk):.4f}")  # fmt: skip
    return rows, slopes, encode_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("results/train/demo"))
    parser.add_argument("--val", type=Path, default=Path("results/splits/val.csv"))
    parser.add_argument("--cases", type=int, default=10, help="demo validation cases")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--real", type=int, default=1, help="real-size phantoms")
    parser.add_argument("--spacing-mm", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="cases encoded at once")
    parser.add_argument("--production", action="store_true", help="also time an untrained production model")
    parser.add_argument("--preset", default=None, help="the production model's preset (default: the run's)")
    parser.add_argument("--real-size", default="real", choices=["real", "demo"], help="the real cases' phantom size")
    parser.add_argument("--smoke", action="store_true", help="CPU smoke run: one demo-size case at 4 mm, tiny models")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases, args.real, args.real_size, args.spacing_mm, args.resolution = 0, 1, "demo", 4.0, 32
        args.production, args.preset, args.batch, args.device = True, "tiny", 2, "cpu"
    checkpoint = args.run / "checkpoint-best.pt"
    if not args.production and not checkpoint.exists():
        print(f"no {checkpoint}; run the demo first: snakemake --cores 2", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    demo = EvalSettings(resolution=args.resolution)
    real = replace(demo, spacing_mm=args.spacing_mm)
    rows, slopes, encoding = [], [], {}
    with tempfile.TemporaryDirectory(prefix="vecset-decode-") as tmp:
        out = Path(tmp)
        cases = []
        if checkpoint.exists() and args.cases:
            cases = [(case, path, Path(f"results/demo/{case}.nii.gz"), demo, f"demo {args.resolution}")
                     for case, path in read_split_csv(args.val)[: args.cases]]  # fmt: skip
        for i in range(args.real):
            case, labels, samples = real_case(out / "real", i, args.real_size)
            cases.append((case, samples, labels, real, f"real {args.spacing_mm:g} mm"))
        if checkpoint.exists():
            model, _ = load_model(checkpoint, device)
            plan = RunPlan.read(args.run / "settings.json")
            found = evaluate_cases("trained", model, plan.train.items, plan.seed, cases, args, device, out)
            rows, slopes, encoding["trained"] = found[0], found[1], found[2]
        if args.production:
            config, items = production_run(args.preset)
            model = VecSetAutoEncoder(config).to(device).eval()
            real_cases = [c for c in cases if c[3] is real]
            found = evaluate_cases("untrained prod.", model, items, 0, real_cases, args, device, out, score=False)
            rows, encoding["production"] = rows + found[0], found[2]
    print(table(rows))
    if slopes:
        near, anywhere = max(s[0] for s in slopes), max(s[1] for s in slopes)
        print(f"model SDF slope |grad f| (exact SDF: 1), max over {len(slopes)} demo cases: {near:.2f} within two "
              f"cells of a zero level, {anywhere:.2f} anywhere; refine_slope {demo.refine_slope:g}")  # fmt: skip
    for label, seconds in encoding.items():
        print(f"encoding ({label} model): {seconds:.3f} s per case at batch {args.batch}")
    if args.production:
        print(production_estimate(rows, encoding["production"]))
    measured = [r for r in rows if not r.setting.startswith("untrained")]  # an untrained SDF says nothing of Dice
    main_rows = [r for r in measured if "demo" in r.setting] or measured or rows
    fewer = statistics.median(r.dense_points / r.fine_points for r in main_rows)
    change = max((r.dice_change for r in measured), default=float("nan"))
    print(f"coarse-to-fine: {fewer:.1f}x fewer decoded points, max Dice change {change:.4f}")
    return 0


def production_estimate(rows: list[Compared], encode_s: float) -> str:
    """Seconds per case of the production model at the real setting: its dense decoding time (an untrained
    model refines everywhere) × the share of points the trained model decodes coarse-to-fine there, plus the
    rest of a case's work as the trained model's run measured it (meshes, label map, metrics) and encoding."""
    untrained = [r for r in rows if r.setting.startswith("untrained")]
    trained = [r for r in rows if r.setting.startswith("trained real")]
    decode = statistics.median(r.dense_decode_s for r in untrained)
    if trained:
        share = statistics.median(r.fine_points / r.dense_points for r in trained)
        rest = statistics.median(r.fine_case_s - r.fine_decode_s for r in trained)
    else:  # no trained model: dense decoding, and nothing known of the rest
        return (f"production model at the real setting: decode {decode:.1f} s dense + {encode_s:.2f} s encoding per "
                "case; no trained model scored the case, so no label map and metrics time (run the demo, or carry "
                "results/train/demo/checkpoint-best.pt and settings.json)")  # fmt: skip
    per_case = decode * share + rest + encode_s
    return (f"production model at the real setting: {per_case:.1f} s per case (decode {decode:.1f} s dense × "
            f"{share:.2f} coarse-to-fine + {rest:.1f} s meshes, label map, metrics + {encode_s:.2f} s encoding); "
            f"200 validation cases ≈ {200 * per_case / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
