"""Evaluate one training run on its validation cases (rule evaluate): reconstruct, score, aggregate."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from vecset.atomic import write_bytes_atomic
from vecset.data.samples import load_normalisation
from vecset.data.split import read_split_csv
from vecset.eval.case import evaluate_case
from vecset.eval.encoding import encode_item, encoding_dataset, latent_sdf
from vecset.model.checkpoint import load_model
from vecset.plan import RunPlan

log = logging.getLogger(__name__)
METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "chamfer_mm")


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per structure: cases scored, cases absent, and mean / median of every metric over scored cases."""
    scored = rows[rows["status"] != "absent"]
    summary = scored.groupby("structure", sort=False)[list(METRICS)].agg(["mean", "median"])
    summary.columns = ["_".join(map(str, column)) for column in summary.columns]
    counts = rows.groupby("structure", sort=False)["status"].agg(
        cases="count", absent=lambda s: int((s == "absent").sum())
    )
    return counts.join(summary).reset_index()


def evaluate_run(
    plan_path: Path,
    checkpoint: Path,
    val_csv: Path,
    label_paths: dict[str, str],
    label_map: dict[str, int],
    resolution: int,
    out_dir: Path,
    metrics_csv: Path,
    summary_csv: Path,
) -> pd.DataFrame:
    """Reconstruct and score every case of ``val_csv`` with the run's best checkpoint: per-case meshes and label
    maps under ``out_dir``, the metrics table and its per-structure summary; returns the metrics."""
    model, _ = load_model(checkpoint)
    cases = read_split_csv(val_csv)
    dataset = encoding_dataset(model, RunPlan.read(plan_path), cases)
    rows = []
    for index, (case, path) in enumerate(cases):
        sdf = latent_sdf(model, encode_item(model, dataset[index], dataset.settings))
        center, scale = load_normalisation(path)
        rows += evaluate_case(case, sdf, center, scale, label_paths[case], label_map, resolution, out_dir / case)
        log.info("%s: reconstructed at %d³ (%d/%d)", case, resolution, index + 1, len(cases))
    table = pd.DataFrame(rows)
    summary = summarise(table)
    write_bytes_atomic(metrics_csv, table.to_csv(index=False, float_format="%.4f").encode())
    write_bytes_atomic(summary_csv, summary.to_csv(index=False, float_format="%.4f").encode())
    line = ", ".join(f"{r.structure} {r.dice_mean:.3f}" for r in summary.itertuples())
    log.info("mean Dice over %d validation cases: %s", len(cases), line)
    return table
