"""Latent-fitting cost: what ``eval.fit_steps`` adds per case, against one training item of the same model.

Per preset, FLOPs counted on the meta device (no weights, no memory): one fitting step of one case (the latent
context's forward and the backward to the latent set only, over the step's fit_points surface points, their
forward differences and the anchor points) against one training item's forward and backward
(vecset.plan.model_cost, the unit train_step.py's throughput is measured in). The ratio says what a case's fit
costs in training items: at the default 100 steps, 200 validation cases cost ``200 × 100 × ratio`` items, i.e.
that many seconds at 100 items/s (an H100 on the upstream preset, counting its training step's optimizer and
bf16 where the fit runs part of the decoder in fp32: an estimate, not a GPU measurement). With --cases, the wall
time per case of a preset's model on --device: encoding against the default fit, on demo sample files (a GPU fits
them all at once under bf16, the CPU 4 at a time, as evaluate does; medians over those groups).

    python bench/fit_cost.py                       # FLOPs of every preset
    python bench/fit_cost.py --cases 8              # and 8 demo cases timed on 2 threads (results/samples)
    python bench/fit_cost.py --cases 16 --device cuda --preset upstream   # the production model on a GPU
    python bench/fit_cost.py --smoke --samples DIR  # CPU smoke run (tests/test_benches.py): 2 cases, tiny, 20 steps

The last line: `fit: <R> training items per case at <S> steps (<preset>)`, R for the upstream preset.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vecset.eval.encoding import CPU_FIT_CASES
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


def case_times(samples: Path, cases: int, settings: EvalSettings, preset: str, device: str) -> tuple[float, float]:
    """Median seconds per case of ``preset``'s (untrained) model on ``device`` over ``cases`` sample files:
    (encoding, fitting), fitted as evaluate fits them (a GPU all cases at once under bf16, the CPU
    CPU_FIT_CASES at a time on 2 threads). The fit's work does not depend on the weights."""
    torch.set_num_threads(2)
    train = TrainSettings(preset=preset)  # type: ignore[arg-type]
    placed = torch.device(device)
    model = VecSetAutoEncoder(train.model_config(len(IMAGECAS_LABELS))).to(placed).eval()
    paths = sorted(samples.glob("*.npz"))[:cases]
    if not paths:
        raise SystemExit(f"no sample files in {samples}: run `snakemake --cores 2` first")
    surfaces = [CaseSurface.read(path, len(IMAGECAS_LABELS), path.stem) for path in paths]
    n_input = train.items.n_input
    inputs = torch.stack(
        [torch.cat([torch.from_numpy(s.points[:n_input]), torch.eye(len(IMAGECAS_LABELS))[s.labels[:n_input]]], dim=1)
         for s in surfaces]
    ).to(placed)  # fmt: skip
    cuda = placed.type == "cuda"
    size = len(paths) if cuda else CPU_FIT_CASES

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize(placed)
        return time.perf_counter()

    start = clock()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        z, _ = model.encode(inputs)
    encode_s = (clock() - start) / len(paths)
    fit_s = []
    for first in range(0, len(paths), size):
        start = clock()
        fit_latents(
            model, z[first : first + size].float(), surfaces[first : first + size], settings.fit_steps,
            settings.fit_lr, settings.fit_points, bf16=cuda,
        )  # fmt: skip
        fit_s.append((clock() - start) / len(surfaces[first : first + size]))
    return encode_s, statistics.median(fit_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=0, help="sample files to time the fit on (0: none)")
    parser.add_argument("--samples", type=Path, default=Path("results/samples"))
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model timed (untrained)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--fit-steps", type=int, default=None, help="eval.fit_steps (default: the configured)")
    parser.add_argument("--smoke", action="store_true", help="CPU smoke run: 2 cases of the tiny preset, 20 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases, args.preset, args.device, args.fit_steps = 2, "tiny", "cpu", 20
    settings = EvalSettings() if args.fit_steps is None else EvalSettings(fit_steps=args.fit_steps)
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
    if args.cases:
        encode_s, fit_s = case_times(args.samples, args.cases, settings, args.preset, args.device)
        print(f"{args.preset} on {args.device} ({args.cases} cases): encode {encode_s:.3f} s, fit {fit_s:.2f} s per "
              f"case ({fit_s / encode_s:.0f}x); 200 cases: {200 * fit_s / 60:.1f} min")  # fmt: skip
    print(f"fit: {settings.fit_steps * ratio:.0f} training items per case at {settings.fit_steps} steps (upstream)")


if __name__ == "__main__":
    main()
