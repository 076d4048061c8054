"""Latent fitting's proximal weight (eval.fit_proximal): Dice against drift. For each trained run, its validation
cases are encoded, fitted with each weight (as evaluate and encode fit them: vecset.eval.encoding.fitted_latents) and
scored through the evaluation's own per-case path (vecset.eval.case.score_case, the eval defaults); each fitted set's
drift is its relative change ‖z − z_encoder‖ / ‖z_encoder‖. The encoder's own sets are the first row. Per run and,
over several runs (seeds), mean ± sd: the large structures' mean Dice, the thin ones' Dice, the median and largest
drift.

    snakemake --cores 2 --configfile config/config.yaml config/ablations.yaml \\
        results/train/{demo,seed_1,seed_2}/checkpoint-best.pt
    python bench/fit_proximal.py --runs demo,seed_1,seed_2 --weights 0,0.01,0.1,1
    python bench/fit_proximal.py --smoke --run-dirs DIR --val CSV --labels DIR    # CPU smoke run (tests)

The last line: `fit_proximal <w>: large <D>, drift median <R> (<N> runs)` for the weight whose median drift is the
lowest with Dice within 0.02 of the free fit's (weight 0) for the large structures' mean and each thin structure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

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


def score_weights(
    run_dir: Path, val_csv: Path, labels: Path, weights: list[float], settings: EvalSettings
) -> list[dict]:
    """One row per fit (the encoder's sets first, then each proximal weight) of a run's validation cases: mean Dice
    per structure, the large structures' mean, and the median and largest drift."""
    plan = RunPlan.read(run_dir / "settings.json")
    model, _ = load_model(run_dir / "checkpoint-best.pt")
    cases = read_split_csv(val_csv)
    dataset = encoding_dataset(model, plan, cases)
    decoder = GridDecoder(settings, torch.device("cpu"), query_chunk(model, torch.device("cpu")))
    label_map = dict(IMAGECAS_LABELS)
    truths = {case: CaseTruth.read(case, labels / f"{case}.nii.gz", label_map) for case, _ in cases}
    rows = []
    for name, weight in [("encoder", None), *((f"proximal {w:g}", w) for w in weights)]:
        fit = replace(settings, fit_steps=0) if weight is None else replace(settings, fit_proximal=weight)
        scores, drifts = CaseScores(), []
        for index, z, encoded in fitted_latents(model, dataset, fit):
            case, path = cases[index]
            center, scale = load_normalisation(path, case)
            sdf = latent_sdf(model, z, settings.precision)
            one = score_case(case, sdf, center, scale, truths[case], label_map, decoder, Path("."), write=False)
            scores.extend(beside_encoder(one, one))
            drifts.append(float(torch.linalg.norm(z - encoded) / torch.linalg.norm(encoded)))
        summary = summarise(scores_tables(scores, RUN_METRIC_COLUMNS)[0]).set_index("structure")
        dice = summary["dice_mean"]
        row = {"run": run_dir.name, "fit": name, "weight": weight}
        row["large"] = float(dice[[s for s in dice.index if s not in THIN]].mean())
        row |= {SHORT[s]: float(dice[s]) for s in THIN if s in dice.index}
        row |= {"drift median": statistics.median(drifts), "drift max": max(drifts)}
        log(f"{run_dir.name} {name}: large {row['large']:.3f}, drift median {row['drift median']:.3f}")
        rows.append(row)
    return rows


def chosen(table: pd.DataFrame) -> tuple[float, float, float]:
    """(weight, large Dice, median drift), means over runs, of the weight with the lowest median drift whose Dice
    stays within 0.02 of the free fit's (weight 0) for the large structures' mean and for each thin structure."""
    measures = [c for c in ("large", *SHORT.values()) if c in table]
    fitted = table[table["weight"].notna()]
    means = {
        float(w): fitted[fitted["weight"] == w][[*measures, "drift median"]].mean() for w in fitted["weight"].unique()
    }
    free = means.get(0.0)
    near = [w for w, m in means.items() if free is None or all(m[c] >= free[c] - 0.02 for c in measures)]
    best = min(near, key=lambda w: float(means[w]["drift median"])) if near else 0.0
    return best, float(means[best]["large"]), float(means[best]["drift median"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="demo", help="comma list of runs under results/train")
    parser.add_argument("--run-dirs", default=None, help="comma list of run folders instead (checkpoint, settings)")
    parser.add_argument("--weights", default="0,0.01,0.1,1", help="comma list of eval.fit_proximal weights")
    parser.add_argument("--val", type=Path, default=REPO / "results/splits/val.csv")
    parser.add_argument("--labels", type=Path, default=REPO / "results/demo", help="folder of {case}.nii.gz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="2 weights, 10 fitting steps, a 32³ grid")
    args = parser.parse_args(argv)
    settings = EvalSettings()
    if args.smoke:
        args.weights, settings = "0,1", EvalSettings(resolution=32, fit_steps=10)
    torch.set_num_threads(args.threads)
    dirs = [Path(d) for d in args.run_dirs.split(",")] if args.run_dirs else [
        REPO / "results/train" / run for run in args.runs.split(",")
    ]  # fmt: skip
    weights = [float(w) for w in args.weights.split(",")]
    table = pd.DataFrame([row for d in dirs for row in score_weights(d, args.val, args.labels, weights, settings)])
    columns = [c for c in ("large", *SHORT.values(), "drift median", "drift max") if c in table]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len(dirs) > 1:
        spread = table.groupby("fit", sort=False)[columns].agg(["mean", "std"])
        print(spread.to_string(float_format=lambda v: f"{v:.3f}"))
    weight, large, drift = chosen(table)
    print(f"fit_proximal {weight:g}: large {large:.3f}, drift median {drift:.3f} ({len(dirs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
