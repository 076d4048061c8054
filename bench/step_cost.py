"""What a demo training step costs per model and item variant: forward, backward, clipping and AdamW of the real
Objective on items the real SampleDataset builds from sample files, on the CPU. Each variant is a dict of `train`
overrides (model, items, weights, n_eikonal, batch_size) over the shipped defaults; the first row is the defaults
and every row shows its ratio to it. Variants run interleaved, round by round, so a machine that slows down slows
them all; the figure is the median over rounds. For choosing what to spend the demo's wall time on
(docs/benchmarks.md, ablations on the demo budget).

    snakemake --cores 2 --until split && python bench/step_cost.py [--samples results/samples] [--rounds 10]
    python bench/step_cost.py --variants '{"depth 6": {"model": {"depth": 6}}}'
    python bench/step_cost.py --smoke --samples DIR   # CPU smoke run (tests/test_benches.py): one small variant

The last line: `step cost: shipped defaults <T> ms per step; <N> variants, <V> at <R>x` (V: the costliest variant).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vecset.config import deep_merge
from vecset.model.items import SampleDataset, encoder_inputs
from vecset.model.vecset import VecSetAutoEncoder, count_parameters
from vecset.settings import TrainSettings, build
from vecset.train.objective import Objective
from vecset.train.state import make_optimizer
from vecset.train.trainer import structure_weights

SMOKE_VARIANTS = {"batch 1, width 64": {"batch_size": 1, "model": {"width": 64}}}
VARIANTS: dict[str, dict[str, Any]] = {
    "decoder feed-forward": {"model": {"decoder_ff": True}},
    "decoder ff, no eikonal": {"model": {"decoder_ff": True}, "n_eikonal": 0},
    "decoder ff, depth 6": {"model": {"decoder_ff": True, "depth": 6}},
    "decoder ff, 128 latents": {"model": {"decoder_ff": True, "n_latents": 128}},
    "decoder ff, width 192": {"model": {"decoder_ff": True, "width": 192}},
    "decoder ff, 512 inputs": {"model": {"decoder_ff": True}, "items": {"n_input": 512}},
    "decoder ff, batch 2": {"model": {"decoder_ff": True}, "batch_size": 2},
    "128 latents": {"model": {"n_latents": 128}},
    "depth 6": {"model": {"depth": 6}},
}


class Variant:
    """One configuration's model, objective, optimizer and items, ready to take timed steps."""

    def __init__(self, overrides: dict[str, Any], cases: list[tuple[str, Path]], class_names: list[str]) -> None:
        n_classes = len(class_names)
        defaults = TrainSettings()
        merged = deep_merge({"model": defaults.model}, overrides)
        self.train = build(TrainSettings, merged)
        torch.manual_seed(0)
        self.config = self.train.model_config(n_classes)
        self.model = VecSetAutoEncoder(self.config)
        t = self.train
        # The trainer's per-structure weights too, so a weights.thin variant pays for them as a run does.
        weights = structure_weights(class_names, t)
        self.objective = Objective(self.model, t.weights, t.eikonal_step, t.n_eikonal, t.items.n_vol, weights)
        self.optimizer = make_optimizer(self.objective.parameters(), t, torch.device("cpu"))
        self.items = SampleDataset(cases, n_classes, t.items, train=True)
        self.step_number = 0

    def step(self) -> float:
        """Seconds of one step, its items' construction included (a CPU rank builds them in-process)."""
        b, n = self.train.batch_size, len(self.items)
        start = time.perf_counter()
        batch = [self.items[(self.step_number, (self.step_number * b + j) % n)] for j in range(b)]
        stacked = {key: torch.stack([item[key] for item in batch]) for key in batch[0]}
        surface, latent_points = encoder_inputs(stacked["surface"], self.train.items, self.config)
        loss, _ = self.objective(stacked, surface, latent_points)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.train.clip_grad)
        self.optimizer.step()
        self.step_number += 1
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=Path("results/samples"), help="folder of sample .npz files")
    parser.add_argument("--cases", type=int, default=8, help="sample files to draw items from")
    parser.add_argument("--rounds", type=int, default=10, help="timed steps per variant (after 2 untimed)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the demo's train job has 2)")
    parser.add_argument("--variants", default=None, help="JSON {name: train overrides} instead of the built-in set")
    parser.add_argument("--smoke", action="store_true", help="CPU smoke run: one small variant, 2 cases, 2 rounds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases, args.rounds, args.threads, args.variants = 2, 2, 1, json.dumps(SMOKE_VARIANTS)
    files = sorted(args.samples.glob("*.npz"))[: args.cases]
    if not files:
        raise SystemExit(f"no sample files in {args.samples}: run `snakemake --cores 2 --until split` first")
    torch.set_num_threads(args.threads)
    with np.load(files[0]) as first:
        class_names = [str(name) for name in first["class_names"]]
    cases = [(path.stem, path) for path in files]
    named: dict[str, dict[str, Any]] = {"shipped defaults": {}}
    named |= json.loads(args.variants) if args.variants else VARIANTS
    variants = {name: Variant(overrides, cases, class_names) for name, overrides in named.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(args.rounds + 2):
        for name, variant in variants.items():
            seconds = variant.step()
            if round_number >= 2:
                times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    baseline = medians["shipped defaults"]
    print(f"{'variant':28s} {'params (M)':>10s} {'step (ms)':>10s} {'× defaults':>11s}")
    for name, variant in variants.items():
        params = count_parameters(variant.model) / 1e6
        print(f"{name:28s} {params:10.2f} {medians[name] * 1e3:10.0f} {medians[name] / baseline:11.2f}")
    others = [name for name in medians if name != "shipped defaults"]
    line = f"step cost: shipped defaults {baseline * 1e3:.0f} ms per step; {len(others)} variants"
    if others:
        costliest = max(others, key=lambda name: medians[name])
        line += f", {costliest} at {medians[costliest] / baseline:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
