"""Evaluate one training run on its validation cases (rule evaluate): reconstruct, score, aggregate."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from vecset.atomic import write_bytes_atomic
from vecset.data.samples import load_normalisation
from vecset.data.split import read_split_csv
from vecset.device import pick_device
from vecset.eval.case import CaseScores, evaluate_case
from vecset.eval.decode import GridDecoder
from vecset.eval.encoding import effective_precision, encoding_dataset, fitted_latents, latent_sdf, query_chunk
from vecset.model.checkpoint import load_model
from vecset.plan import RunPlan
from vecset.settings import EvalSettings

log = logging.getLogger(__name__)
METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "cldice", "chamfer_mm")
METRIC_COLUMNS = ["case", "structure", "status", *METRICS]
INTERFACE_COLUMNS = [
    "case", "structure_a", "structure_b", "wall_mm3", "overlap_mm3", "overlap_fraction", "gap_mm3", "gap_fraction",
]  # fmt: skip
INTERFACE_MEASURES = INTERFACE_COLUMNS[3:]


def _mean_median(groups: Any, measures: Sequence[str]) -> pd.DataFrame:
    table = groups[list(measures)].agg(["mean", "median"])
    table.columns = ["_".join(map(str, column)) for column in table.columns]
    return table


def _beside_oracle(
    summary: pd.DataFrame, oracle: pd.DataFrame | None, keys: list[str], measures: Sequence[str]
) -> pd.DataFrame:
    """``summary`` with each measure's mean over the ``oracle``'s rows (``{measure}_oracle_mean``), when given."""
    if oracle is None:
        return summary
    return summary.join(oracle.groupby(keys, sort=False)[list(measures)].mean().add_suffix("_oracle_mean"))


def summarise(rows: pd.DataFrame, oracle: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per structure: cases scored, cases absent, and mean / median of every metric over scored cases; with the
    ``oracle``'s rows of the same cases, each metric's oracle mean beside it (``{metric}_oracle_mean``)."""
    counts = rows.groupby("structure", sort=False)["status"].agg(
        cases="count", absent=lambda s: int((s == "absent").sum())
    )
    summary = counts.join(_mean_median(rows[rows["status"] != "absent"].groupby("structure", sort=False), METRICS))
    scored_oracle = None if oracle is None else oracle[oracle["status"] != "absent"]
    return _beside_oracle(summary, scored_oracle, ["structure"], METRICS).reset_index()


def summarise_interfaces(rows: pd.DataFrame, oracle: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per touching pair: the cases where it touches, the mean / median of each interface measure and, with the
    ``oracle``'s rows, each measure's oracle mean beside it."""
    keys = ["structure_a", "structure_b"]
    pairs = rows.groupby(keys, sort=False)
    summary = pairs.size().rename("cases").to_frame().join(_mean_median(pairs, INTERFACE_MEASURES))
    return _beside_oracle(summary, oracle, keys, INTERFACE_MEASURES).reset_index()


def read_tables(paths: list[Path], columns: list[str]) -> pd.DataFrame:
    """Per-case CSVs (the oracle's) as one table, with ``columns`` even when there are none."""
    frames = [pd.read_csv(path) for path in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def scores_tables(scores: CaseScores) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, interfaces) tables of some cases' scores, with their columns even when empty."""
    return (
        pd.DataFrame(scores.metrics, columns=METRIC_COLUMNS),
        pd.DataFrame(scores.interfaces, columns=INTERFACE_COLUMNS),
    )


def write_csv(path: Path, table: pd.DataFrame) -> None:
    write_bytes_atomic(path, table.to_csv(index=False, float_format="%.4f").encode())


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
    interfaces_csv: Path,
    interface_summary_csv: Path,
    oracle_metrics: Sequence[Path] = (),
    oracle_interfaces: Sequence[Path] = (),
) -> pd.DataFrame:
    """Reconstruct and score every case of ``val_csv`` with the run's best checkpoint, on the run's device:
    per-case meshes and label maps under ``out_dir``, the metrics table and its per-structure summary, the
    interface table (overlaps and gaps per touching pair) and its per-pair summary; the oracle's tables of the same
    cases (rule oracle), when given, add its means beside each summary's. Returns the metrics. Cases are encoded
    and their latent sets fitted to their own surfaces (``settings.fit_steps``) ``settings.batch_size`` at a time
    (items read by the run's DataLoader workers for that device)."""
    plan = RunPlan.read(plan_path)
    device = pick_device(plan.train.device)
    model, _ = load_model(checkpoint, device)
    cases = read_split_csv(val_csv)
    dataset = encoding_dataset(model, plan, cases)
    decoder = GridDecoder(settings, device, query_chunk(model, device))
    log.info("%d validation cases on %s (%s), %d query points per decoder call", len(cases), device,
             effective_precision(device, settings.precision), decoder.chunk)  # fmt: skip
    workers = plan.train.loader_workers(device.type == "cuda")
    latents = {index: z for index, z, _ in fitted_latents(model, dataset, settings, workers, "encode")}
    scores = CaseScores()
    bar = tqdm(cases, desc="reconstruct", unit="case", file=sys.stderr, mininterval=2.0)
    for index, (case, path) in enumerate(bar):
        center, scale = load_normalisation(path)
        sdf = latent_sdf(model, latents[index], settings.precision)
        scores.extend(
            evaluate_case(
                case, sdf, center, scale, label_paths[case], label_map, decoder, out_dir / case, settings.tubular
            )
        )
    table, interfaces = scores_tables(scores)
    oracle = read_tables(list(oracle_metrics), METRIC_COLUMNS) if oracle_metrics else None
    oracle_walls = read_tables(list(oracle_interfaces), INTERFACE_COLUMNS) if oracle_interfaces else None
    summary = summarise(table, oracle)
    write_csv(metrics_csv, table)
    write_csv(summary_csv, summary)
    write_csv(interfaces_csv, interfaces)
    write_csv(interface_summary_csv, summarise_interfaces(interfaces, oracle_walls))
    line = ", ".join(f"{r.structure} {r.dice_mean:.3f}" for r in summary.itertuples())
    log.info("mean Dice over %d validation cases: %s", len(cases), line)
    tubes = summary.dropna(subset=["cldice_mean"])
    if len(tubes):
        line = ", ".join(f"{r.structure} {r.cldice_mean:.3f}" for r in tubes.itertuples())
        log.info("mean clDice: %s", line)
    return table
