"""Evaluate one training run on its validation cases (rule evaluate): reconstruct, score, aggregate."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from vecset.atomic import write_bytes_atomic
from vecset.data.samples import load_normalisation
from vecset.data.split import read_split_csv
from vecset.device import pick_device
from vecset.eval.case import evaluate_case
from vecset.eval.decode import GridDecoder
from vecset.eval.encoding import effective_precision, encode_dataset, encoding_dataset, latent_sdf, query_chunk
from vecset.model.checkpoint import load_model
from vecset.plan import RunPlan
from vecset.settings import EvalSettings

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
    settings: EvalSettings,
    out_dir: Path,
    metrics_csv: Path,
    summary_csv: Path,
) -> pd.DataFrame:
    """Reconstruct and score every case of ``val_csv`` with the run's best checkpoint, on the run's device:
    per-case meshes and label maps under ``out_dir``, the metrics table and its per-structure summary;
    returns the metrics. Cases are encoded ``settings.batch_size`` at a time (items read by the run's
    DataLoader workers for that device)."""
    plan = RunPlan.read(plan_path)
    device = pick_device(plan.train.device)
    model, _ = load_model(checkpoint, device)
    cases = read_split_csv(val_csv)
    dataset = encoding_dataset(model, plan, cases)
    decoder = GridDecoder(settings, device, query_chunk(model, device))
    log.info("%d validation cases on %s (%s), %d query points per decoder call", len(cases), device,
             effective_precision(device, settings.precision), decoder.chunk)  # fmt: skip
    workers = plan.train.loader_workers(device.type == "cuda")
    latents = dict(encode_dataset(model, dataset, settings.batch_size, workers, "encode", settings.precision))
    rows = []
    bar = tqdm(cases, desc="reconstruct", unit="case", file=sys.stderr, mininterval=2.0)
    for index, (case, path) in enumerate(bar):
        center, scale = load_normalisation(path)
        sdf = latent_sdf(model, latents[index], settings.precision)
        rows += evaluate_case(case, sdf, center, scale, label_paths[case], label_map, decoder, out_dir / case)
    table = pd.DataFrame(rows)
    summary = summarise(table)
    write_bytes_atomic(metrics_csv, table.to_csv(index=False, float_format="%.4f").encode())
    write_bytes_atomic(summary_csv, summary.to_csv(index=False, float_format="%.4f").encode())
    line = ", ".join(f"{r.structure} {r.dice_mean:.3f}" for r in summary.itertuples())
    log.info("mean Dice over %d validation cases: %s", len(cases), line)
    return table
