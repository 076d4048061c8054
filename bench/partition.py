"""Shared walls with and without eval.partition. For each trained run, its validation cases are encoded and fitted as
evaluate fits them (vecset.eval.encoding.fitted_latents, the eval defaults), decoded, and scored through the
evaluation's own per-case path (vecset.eval.case.score_case) twice: each structure from its own SDF, and every
structure from one partition of space. Per run and mode: the large structures' mean Dice, the thin ones' Dice, each
touching pair's mean overlap and gap (% of the smaller structure; the worst pair, and the worst pair of the large
structures), the meshes that are closed, and the touching pairs whose meshes share vertices.

    snakemake --cores 2 --configfile config/config.yaml config/ablations.yaml \\
        results/train/{demo,seed_1,seed_2}/checkpoint-best.pt
    python bench/partition.py --runs demo,seed_1,seed_2
    python bench/partition.py --smoke --run-dirs DIR --val CSV --labels DIR     # CPU smoke run (tests)

The last line: `partition: worst pair overlap <O>%, gap <G>% (own SDFs <O>%, <G>%); large Dice <D> (<D>);
<k>/<n> meshes closed; <p>/<q> touching pairs share vertices (<N> runs)`, means over runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vecset.data.mesh import is_closed
from vecset.data.ply import read_ply
from vecset.data.samples import load_normalisation
from vecset.data.split import read_split_csv
from vecset.eval.case import CaseScores, CaseTruth, score_case
from vecset.eval.decode import GridDecoder
from vecset.eval.encoding import encoding_dataset, fitted_latents, latent_sdf, query_chunk
from vecset.eval.run import RUN_METRIC_COLUMNS, beside_encoder, scores_tables, summarise
from vecset.model.checkpoint import load_model
from vecset.plan import RunPlan
from vecset.settings import IMAGECAS_LABELS, EvalSettings

from benchlib import REPO, log

THIN = ("left_atrial_appendage", "coronary_arteries", "pulmonary_veins")
SHORT = {"left_atrial_appendage": "LAA", "coronary_arteries": "COR", "pulmonary_veins": "PV"}
MODES = {"own SDFs": False, "partition": True}


def mesh_checks(folder: Path, names: list[str], pairs: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(closed meshes, non-empty meshes, touching pairs whose meshes share at least one vertex) of a case's
    reconstruction folder."""
    meshes = {name: read_ply(folder / f"{name}.ply") for name in names}
    present = {name: m for name, m in meshes.items() if len(m[1])}
    closed = sum(is_closed(faces) for _, faces in present.values())
    shared = 0
    for a, b in pairs:
        if names[a] in present and names[b] in present:
            keys = {tuple(v) for v in np.round(present[names[b]][0], 6)}
            shared += any(tuple(v) in keys for v in np.round(present[names[a]][0], 6))
    return closed, len(present), shared


def score_run(run_dir: Path, val_csv: Path, labels: Path, settings: EvalSettings) -> list[dict]:
    """One row per mode of a run's validation cases."""
    plan = RunPlan.read(run_dir / "settings.json")
    model, _ = load_model(run_dir / "checkpoint-best.pt")
    cases = read_split_csv(val_csv)
    dataset = encoding_dataset(model, plan, cases)
    label_map = dict(IMAGECAS_LABELS)
    names = list(label_map)
    scores = {mode: CaseScores() for mode in MODES}
    checks = {mode: np.zeros(4, dtype=int) for mode in MODES}  # closed, meshes, pairs sharing vertices, pairs
    with tempfile.TemporaryDirectory(prefix="partition-") as scratch:
        for index, z, _ in fitted_latents(model, dataset, settings):
            case, path = cases[index]
            truth = CaseTruth.read(case, labels / f"{case}.nii.gz", label_map)
            center, scale = load_normalisation(path, case, (truth.affine, truth.shape))
            sdf = latent_sdf(model, z, settings.precision)
            for mode, partition in MODES.items():
                decoder = GridDecoder(replace(settings, partition=partition), torch.device("cpu"),
                                      query_chunk(model, torch.device("cpu")))  # fmt: skip
                folder = Path(scratch) / mode / case
                one = score_case(case, sdf, center, scale, truth, label_map, decoder, folder)
                scores[mode].extend(beside_encoder(one, one))
                checks[mode] += [*mesh_checks(folder, names, truth.walls.pairs), len(truth.walls.pairs)]
            log(f"{run_dir.name} {case}: scored both ways")
    rows = []
    for mode in MODES:
        table, interfaces = scores_tables(scores[mode], RUN_METRIC_COLUMNS)
        dice = summarise(table).set_index("structure")["dice_mean"]
        pairs = interfaces.groupby(["structure_a", "structure_b"])[["overlap_fraction", "gap_fraction"]].mean()
        large = pairs[[a not in THIN and b not in THIN for a, b in pairs.index]]
        closed, meshes, shared, touching = checks[mode]
        row = {"run": run_dir.name, "mode": mode, "large": float(dice[[s for s in dice.index if s not in THIN]].mean())}
        row |= {SHORT[s]: float(dice[s]) for s in THIN if s in dice.index}
        row |= {
            "overlap %": 100 * float(pairs["overlap_fraction"].max()),
            "gap %": 100 * float(pairs["gap_fraction"].max()),
            "large overlap %": 100 * float(large["overlap_fraction"].max()),
            "large gap %": 100 * float(large["gap_fraction"].max()),
            "closed": f"{closed}/{meshes}",
            "pairs sharing vertices": f"{shared}/{touching}",
        }
        worst = pairs.assign(worst=pairs.max(axis=1)).sort_values("worst").index[-1]
        log(f"{run_dir.name} {mode}: large {row['large']:.3f}, worst pair {worst}")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="demo", help="comma list of runs under results/train")
    parser.add_argument("--run-dirs", default=None, help="comma list of run folders instead (checkpoint, settings)")
    parser.add_argument("--val", type=Path, default=REPO / "results/splits/val.csv")
    parser.add_argument("--labels", type=Path, default=REPO / "results/demo", help="folder of {case}.nii.gz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sliver-cells", type=float, default=None, help="eval.partition_sliver_cells (default: its)")
    parser.add_argument("--smoke", action="store_true", help="10 fitting steps, a 32³ grid")
    args = parser.parse_args(argv)
    settings = EvalSettings(resolution=32, fit_steps=10) if args.smoke else EvalSettings()
    if args.sliver_cells is not None:
        settings = replace(settings, partition_sliver_cells=args.sliver_cells)
    torch.set_num_threads(args.threads)
    dirs = [Path(d) for d in args.run_dirs.split(",")] if args.run_dirs else [
        REPO / "results/train" / run for run in args.runs.split(",")
    ]  # fmt: skip
    table = pd.DataFrame([row for d in dirs for row in score_run(d, args.val, args.labels, settings)])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    means = table.groupby("mode", sort=False)[["large", "overlap %", "gap %"]].mean()
    closed = table[table["mode"] == "partition"]["closed"].str.split("/", expand=True).astype(int).sum()
    shared = table[table["mode"] == "partition"]["pairs sharing vertices"].str.split("/", expand=True).astype(int).sum()
    own, split = means.loc["own SDFs"], means.loc["partition"]
    print(
        f"partition: worst pair overlap {split['overlap %']:.2f}%, gap {split['gap %']:.2f}% (own SDFs "
        f"{own['overlap %']:.2f}%, {own['gap %']:.2f}%); large Dice {split['large']:.3f} ({own['large']:.3f}); "
        f"{closed[0]}/{closed[1]} meshes closed; {shared[0]}/{shared[1]} touching pairs share vertices "
        f"({len(dirs)} runs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
