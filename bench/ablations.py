"""The thin-structure ablations' table: per run, mean Dice per structure over the validation cases, the mean of the
seven large structures, clDice of the tubes, and the training job's wall time; the oracle (each case's exact SDF
through the same grid and metrics) as the last row.

Run the runs first (config/ablations.yaml), then this in the same working directory:

    snakemake --cores 2 --configfile config/config.yaml config/ablations.yaml
    python bench/ablations.py [--results results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

THIN = ("left_atrial_appendage", "coronary_arteries", "pulmonary_veins")
SHORT = {
    "myocardium": "MYO", "left_atrium": "LA", "left_ventricle": "LV", "right_atrium": "RA", "right_ventricle": "RV",
    "aorta": "AO", "pulmonary_artery": "PA", "left_atrial_appendage": "LAA", "coronary_arteries": "COR",
    "pulmonary_veins": "PV",
}  # fmt: skip


def run_row(results: Path, run: str) -> dict[str, object]:
    """One run's figures from its summary.csv and its training benchmark."""
    summary = pd.read_csv(results / "eval" / run / "summary.csv").set_index("structure")
    row: dict[str, object] = {"run": run}
    row |= {SHORT.get(s, s): summary.loc[s, "dice_mean"] for s in summary.index}
    large = [s for s in summary.index if s not in THIN]
    row["large"] = summary.loc[large, "dice_mean"].mean()
    for tube in ("coronary_arteries", "pulmonary_veins"):
        if tube in summary.index:
            row[f"cl{SHORT[tube]}"] = summary.loc[tube, "cldice_mean"]
    benchmark = results / "benchmarks" / "train" / f"{run}.tsv"
    row["train_s"] = float(pd.read_csv(benchmark, sep="\t")["s"].iloc[-1]) if benchmark.exists() else float("nan")
    return row


def oracle_row(results: Path, run: str) -> dict[str, object]:
    summary = pd.read_csv(results / "eval" / run / "summary.csv").set_index("structure")
    row: dict[str, object] = {"run": "oracle"}
    row |= {SHORT.get(s, s): summary.loc[s, "dice_oracle_mean"] for s in summary.index}
    row["large"] = summary.loc[[s for s in summary.index if s not in THIN], "dice_oracle_mean"].mean()
    for tube in ("coronary_arteries", "pulmonary_veins"):
        if tube in summary.index:
            row[f"cl{SHORT[tube]}"] = summary.loc[tube, "cldice_oracle_mean"]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="the workflow's results folder")
    args = parser.parse_args(argv)
    runs = sorted(p.name for p in (args.results / "eval").iterdir() if (p / "summary.csv").exists())
    if not runs:
        raise SystemExit(f"no evaluated runs under {args.results / 'eval'}: run the workflow first")
    table = pd.DataFrame([run_row(args.results, run) for run in runs] + [oracle_row(args.results, runs[0])])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"))


if __name__ == "__main__":
    main()
