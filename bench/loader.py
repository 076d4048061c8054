"""Loader benchmark: training items per second per DataLoader worker, at production and demo item settings,
against the previous item route (whole sample file loaded, FPS of the encoder input on the CPU per item)
in the same run.

One worker builds items one after another in one process; this script does exactly that in-process (one
thread, as a worker has), then runs the real DataLoader with 1 and 2 workers over the same items. Sample
files are the workflow's (results/samples/*.npz, 100 000 surface and 25 000 + 25 000 query points per case,
as for real data); run the workflow up to them first (snakemake --cores 2 --until split). Their pages are
read once before timing (warm page cache, as after the first epoch).

    python bench/loader.py                    # ends with: loader production items/s per worker: <N>
    python bench/loader.py --items 400 --repeats 5
    python bench/loader.py --smoke --samples DIR    # CPU smoke run (tests/test_benches.py): 8 items, once
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vecset.data.samples import load_samples
from vecset.model.fps import fps_numpy
from vecset.model.items import FPS_POOL, SampleDataset
from vecset.settings import ItemSettings

from benchlib import configured_run

N_CLASSES = 10
PRODUCTION = configured_run(True).train.items  # config/imagecas.yaml's items
DEMO = configured_run(False).train.items  # config/config.yaml's items
PREVIOUS_POOL = 8  # the previous route's FPS candidates per picked point


def previous_item(path: Path, settings: ItemSettings, rng: np.random.Generator) -> np.ndarray:
    """The previous route's costly part: the whole file loaded, FPS of the input over a random pool on the CPU."""
    arrays = load_samples(path)
    surface = arrays["surface_points"]
    pool = rng.choice(len(surface), size=min(len(surface), PREVIOUS_POOL * settings.n_input), replace=False)
    return pool[fps_numpy(surface[pool], settings.n_input)]


def item_of(dataset: SampleDataset, i: int) -> object:
    """Training item i (modulo the cases) of an epoch, as a loader worker builds it."""
    return dataset[(1, i % len(dataset))]


def previous_item_of(files: list[Path], settings: ItemSettings, rng: np.random.Generator, i: int) -> np.ndarray:
    return previous_item(files[i % len(files)], settings, rng)


def rate(build: Callable[[int], object], n_items: int, repeats: int) -> float:
    """Median items/s of building n_items one after another, over repeats."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(n_items):
            build(i)
        rates.append(n_items / (time.perf_counter() - started))
    return statistics.median(rates)


def loader_rate(dataset: SampleDataset, workers: int, n_items: int, batch: int) -> float:
    """Items/s through a DataLoader with ``workers`` processes (start-up excluded: the first batch waits)."""
    keys = [[(1, (i + j) % len(dataset)) for j in range(batch)] for i in range(0, n_items, batch)]
    loader = DataLoader(dataset, batch_sampler=keys, num_workers=workers, prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)
    started = time.perf_counter()
    count = sum(len(b["points"]) for b in it)
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=Path("results/samples"))
    parser.add_argument("--items", type=int, default=200, help="items per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="CPU smoke run: 8 items per pass, one pass")
    args = parser.parse_args(argv)
    if args.smoke:
        args.items, args.repeats = 8, 1
    files = sorted(args.samples.glob("*.npz"))
    if not files:
        print(f"no sample files in {args.samples}; run: snakemake --cores 2 --until split", file=sys.stderr)
        return 1
    torch.set_num_threads(1)  # a DataLoader worker runs one thread
    cases = [(f.stem, f) for f in files]
    for f in files:
        f.read_bytes()  # warm page cache
    n, reps = args.items, args.repeats
    rows: list[tuple[str, float]] = []
    for name, settings in (("production", PRODUCTION), ("demo", DEMO)):
        uniform = SampleDataset(cases, N_CLASSES, settings, train=True)
        fps = SampleDataset(cases, N_CLASSES, dataclasses.replace(settings, input_sampling="fps"), train=True)
        previous = functools.partial(previous_item_of, files, settings, np.random.default_rng(0))
        rows += [
            (f"{name}: uniform input (default)", rate(functools.partial(item_of, uniform), n, reps)),
            (f"{name}: fps input ({FPS_POOL}x pool, device FPS)", rate(functools.partial(item_of, fps), n, reps)),
            (f"{name}: previous route (load + CPU FPS per item)", rate(previous, max(n // 4, 8), reps)),
        ]  # fmt: skip
    production = SampleDataset(cases, N_CLASSES, PRODUCTION, train=True)
    for workers in (1, 2):
        label = f"production: uniform through DataLoader, {workers} worker(s)"
        rows.append((label, loader_rate(production, workers, 2 * n, min(16, max(1, n // 2)))))
    ours, before = rows[0][1], rows[2][1]
    print(f"{'items/s (median of ' + str(reps) + ')':<64} {'items/s':>9}")
    for label, value in rows:
        print(f"{label:<64} {value:>9.1f}")
    print(f"production: ours / previous route = {ours / before:.1f}x")
    print(f"loader production items/s per worker: {ours:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
