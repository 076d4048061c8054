"""Latent-fitting cost: what ``eval.fit_steps`` adds per case, against one training item of the same model.

Per preset, FLOPs counted on the meta device (no weights, no memory): one fitting step of one case (the latent
context's forward and the backward to the latent set only, over the step's fit_points surface points, their
forward differences and the anchor points) against one training item's forward and backward
(vecset.plan.model_cost, the unit train_step.py's throughput is measured in). The ratio says what a case's fit
costs in training items: at the default 100 steps, 200 validation cases cost ``200 × 100 × ratio`` items, i.e.
that many seconds at 100 items/s (an H100 on the upstream preset, counting its training step's optimizer and
bf16 where the fit runs part of the decoder in fp32: an estimate, not a GPU measurement). With --cpu-cases, the
tiny model's wall time per case on this machine: encoding alone against encoding plus the default fit, on demo
sample files (medians over cases).

    python bench/fit_cost.py                       # FLOPs of every preset
    python bench/fit_cost.py --cpu-cases 5          # and 5 demo cases timed on 2 threads (results/samples)

The last line: `fit: <R> training items per case at <S> steps (<preset>)`, R for the upstream preset.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vecset.eval.fitting import ANCHOR_POINTS, CaseSurface, fit_latents
from vecset.model.vecset import VecSetAutoEncoder
from vecset.plan import model_cost
from vecset.settings import IMAGECAS_LABELS, PRESETS, EvalSettings, TrainSettings


def fit_step_flops(preset: str, fit_points: int) -> tuple[int, int]:
    """(FLOPs of one fitting step of one case, FLOPs of one training item) for ``preset``."""
    train = TrainSettings(preset=preset)  # type: ignore[arg-type]
    config = train.model_config(len(IMAGECAS_LABELS))
    _, item = model_cost(config, train)
    queries = ANCHOR_POINTS + 4 * fit_points  # each surface point and its three forward-difference neighbours
    with torch.device("meta"):
        model = VecSetAutoEncoder(config)
        for p in model.parameters():
            p.requires_grad_(False)
        width = config.latent_dim if config.bottleneck != "none" else config.width
        z = torch.zeros(1, config.n_latents, width, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            f = model.query(model.latent_context(z), torch.zeros(1, queries, 3))
            torch.autograd.grad(f.sum(), [z])
    return int(counter.get_total_flops()), item


def cpu_case_times(samples: Path, cases: int, settings: EvalSettings) -> tuple[float, float]:
    """Median seconds per demo case of the tiny model: (encoding, fitting) on 2 threads."""
    torch.set_num_threads(2)
    train = TrainSettings()
    model = VecSetAutoEncoder(train.model_config(len(IMAGECAS_LABELS))).eval()
    paths = sorted(samples.glob("*.npz"))[:cases]
    if not paths:
        raise SystemExit(f"no sample files in {samples}: run `snakemake --cores 2` first")
    encode_s, fit_s = [], []
    for path in paths:
        surface = CaseSurface.read(path, len(IMAGECAS_LABELS), path.stem)
        inputs = torch.cat(
            [torch.from_numpy(surface.points[: train.items.n_input]),
             torch.eye(len(IMAGECAS_LABELS))[surface.labels[: train.items.n_input]]], dim=1,
        )[None]  # fmt: skip
        start = time.perf_counter()
        with torch.no_grad():
            z, _ = model.encode(inputs)
        encode_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        fit_latents(model, z, [surface], settings.fit_steps, settings.fit_lr, settings.fit_points)
        fit_s.append(time.perf_counter() - start)
    return statistics.median(encode_s), statistics.median(fit_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-cases", type=int, default=0, help="demo cases to time on the CPU (0: none)")
    parser.add_argument("--samples", type=Path, default=Path("results/samples"))
    args = parser.parse_args()
    settings = EvalSettings()
    print(f"latent fitting: {settings.fit_steps} steps of {settings.fit_points} surface points per case")
    print(f"{'preset':<10} {'fit step (GFLOP)':>17} {'train item (GFLOP)':>19} {'step / item':>12} "
          f"{'items per case':>15} {'200 cases at 100 items/s':>25}")  # fmt: skip
    ratio = 0.0
    for preset in PRESETS:
        step, item = fit_step_flops(preset, settings.fit_points)
        ratio = step / item
        per_case = settings.fit_steps * ratio
        print(f"{preset:<10} {step / 1e9:>17.2f} {item / 1e9:>19.2f} {ratio:>12.2f} {per_case:>15.0f} "
              f"{200 * per_case / 100 / 60:>21.1f} min")  # fmt: skip
    if args.cpu_cases:
        encode_s, fit_s = cpu_case_times(args.samples, args.cpu_cases, settings)
        print(f"tiny on this CPU (2 threads, {args.cpu_cases} cases): encode {encode_s:.3f} s, fit {fit_s:.2f} s "
              f"per case ({fit_s / encode_s:.0f}x)")  # fmt: skip
    print(f"fit: {settings.fit_steps * ratio:.0f} training items per case at {settings.fit_steps} steps (upstream)")


if __name__ == "__main__":
    main()
