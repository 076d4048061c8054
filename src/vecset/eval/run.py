"""Evaluate one training run on its validation cases (rule evaluate): reconstruct, score, aggregate.

Each case is scored twice from the latent sets encode stored (so the sets scored are the sets kept): with its fitted
latent set (what evaluate reconstructs and writes; the
metric columns as named) and with the encoder's own (what the autoencoder alone achieves, as VecSet-family models are
reported; the columns with the suffix ``_encoder``). With ``eval.fit_steps: 0``, or where the fit kept the encoder's
set, the two are one decoding and the same numbers."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from vecset.atomic import write_bytes_atomic
from vecset.data.samples import load_normalisation
from vecset.data.split import read_split_csv
from vecset.device import pick_device
from vecset.eval.case import CaseScores, CaseTruth, score_case
from vecset.eval.decode import GridDecoder
from vecset.eval.encoding import effective_precision, latent_sdf, query_chunk
from vecset.eval.latents import file_digest
from vecset.model.checkpoint import load_model
from vecset.model.vecset import VecSetAutoEncoder
from vecset.plan import RunPlan
from vecset.settings import EvalSettings

log = logging.getLogger(__name__)
METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "cldice", "chamfer_mm")
SCORE_COLUMNS = ("status", *METRICS)  # what one scoring of a case gives per structure
METRIC_COLUMNS = ["case", "structure", *SCORE_COLUMNS]  # the oracle's per-case table
ENCODER = "_encoder"  # suffix of the encoder latent set's scores beside the fitted ones
RUN_METRIC_COLUMNS = [*METRIC_COLUMNS, *(column + ENCODER for column in SCORE_COLUMNS)]  # metrics.csv
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
    """Per structure: cases scored, cases absent, and mean / median of every metric over scored cases; where the rows
    hold the encoder's scores too, theirs beside each (``{metric}_encoder_mean``, ``_median``, over the cases it
    scored), and with the ``oracle``'s rows of the same cases, each metric's oracle mean (``{metric}_oracle_mean``):
    per metric, fitted, encoder and oracle side by side."""
    counts = rows.groupby("structure", sort=False)["status"].agg(
        cases="count", absent=lambda s: int((s == "absent").sum())
    )
    summary = counts.join(_mean_median(rows[rows["status"] != "absent"].groupby("structure", sort=False), METRICS))
    if "status" + ENCODER in rows:
        scored = rows[rows["status" + ENCODER] != "absent"].groupby("structure", sort=False)
        summary = summary.join(_mean_median(scored, [m + ENCODER for m in METRICS]))
    scored_oracle = None if oracle is None else oracle[oracle["status"] != "absent"]
    summary = _beside_oracle(summary, scored_oracle, ["structure"], METRICS)
    beside = [c for m in METRICS for c in (f"{m}_mean", f"{m}_median", f"{m}{ENCODER}_mean", f"{m}{ENCODER}_median",
                                            f"{m}_oracle_mean") if c in summary]  # fmt: skip
    return summary[["cases", "absent", *beside]].reset_index()


def scores_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The evaluation in one small table (the report's landing page): per structure, the mean Dice and HD95 of the
    encoder's latent sets, of the fitted ones and of the oracle."""
    table = pd.DataFrame({"structure": summary["structure"]})
    for metric, name in (("dice", "Dice"), ("hd95_mm", "HD95 mm")):
        for column, source in (("encoder", f"{metric}{ENCODER}_mean"), ("fitted", f"{metric}_mean"),
                               ("oracle", f"{metric}_oracle_mean")):  # fmt: skip
            table[f"{name} {column}"] = summary[source] if source in summary else np.nan
    return table


WORST_WALLS = 5  # the pairs walls.csv (the report's landing page) lists


def walls_table(interface_summary: pd.DataFrame, worst: int = WORST_WALLS) -> pd.DataFrame:
    """The shared walls in one small table (the report's landing page): the ``worst`` touching pairs by mean overlap
    or gap, each in % of the smaller structure, beside the oracle's."""
    columns = {
        "overlap %": "overlap_fraction_mean",
        "gap %": "gap_fraction_mean",
        "oracle overlap %": "overlap_fraction_oracle_mean",
        "oracle gap %": "gap_fraction_oracle_mean",
    }
    table = pd.DataFrame({"pair": interface_summary["structure_a"] + " / " + interface_summary["structure_b"]})
    for name, source in columns.items():
        table[name] = 100 * interface_summary[source] if source in interface_summary else np.nan
    order = table[["overlap %", "gap %"]].max(axis=1).sort_values(ascending=False, kind="stable").index
    return table.loc[order[:worst]].round(2).reset_index(drop=True)


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


def stored_latents(path: Path, digest: str, checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(fitted, encoder's) latent sets of one case as encode stored them; a file from another checkpoint is refused
    with the fix (encode writes them again when the checkpoint changes)."""
    with np.load(path, allow_pickle=False) as npz:
        if str(npz["checkpoint_sha256"]) != digest:
            raise ValueError(f"{path} was encoded by {npz['checkpoint']}, not by {checkpoint}; rerun the encode rule")
        return torch.from_numpy(npz["z"]), torch.from_numpy(npz["z_encoder"])


def scores_tables(scores: CaseScores, columns: Sequence[str] = METRIC_COLUMNS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, interfaces) tables of some cases' scores, with their columns even when empty."""
    return (
        pd.DataFrame(scores.metrics, columns=list(columns)),
        pd.DataFrame(scores.interfaces, columns=INTERFACE_COLUMNS),
    )


def beside_encoder(fitted: CaseScores, encoder: CaseScores) -> CaseScores:
    """A case's fitted scores with the encoder's beside them in each metric row (the ``_encoder`` columns); the
    interface rows are the fitted reconstruction's."""
    rows = [
        row | {column + ENCODER: other[column] for column in SCORE_COLUMNS}
        for row, other in zip(fitted.metrics, encoder.metrics, strict=True)
    ]
    return CaseScores(rows, fitted.interfaces)


def write_csv(path: Path, table: pd.DataFrame) -> None:
    write_bytes_atomic(path, table.to_csv(index=False, float_format="%.4f").encode())


def evaluate_run(
    plan_path: Path,
    checkpoint: Path,
    latents: Path,
    val_csv: Path,
    label_paths: dict[str, str],
    label_map: dict[str, int],
    settings: EvalSettings,
    out_dir: Path,
    metrics_csv: Path,
    summary_csv: Path,
    interfaces_csv: Path,
    interface_summary_csv: Path,
    scores_csv: Path | None = None,
    walls_csv: Path | None = None,
    oracle_metrics: Sequence[Path] = (),
    oracle_interfaces: Sequence[Path] = (),
) -> pd.DataFrame:
    """Reconstruct and score every case of ``val_csv`` from its latent sets as encode stored them in ``latents`` (the
    fitted ``z`` and the encoder's ``z_encoder``: the sets a generative model is given are the ones scored) with the
    run's best checkpoint, on the run's device: per-case meshes and label maps of the fitted sets under ``out_dir``,
    the metrics table (fitted and encoder scores side by side) and its per-structure summary, the interface table
    (overlaps and gaps per touching pair) and its per-pair summary, the scores table (:func:`scores_table`) and the
    worst walls (:func:`walls_table`); the
    oracle's tables of the same cases (rule oracle), when given, add its means beside each summary's. Returns the
    metrics."""
    plan = RunPlan.read(plan_path)
    device = pick_device(plan.train.device)
    model, _ = load_model(checkpoint, device)
    cases = read_split_csv(val_csv)
    decoder = GridDecoder(settings, device, query_chunk(model, device))
    log.info("%d validation cases on %s (%s), %d query points per decoder call", len(cases), device,
             effective_precision(device, settings.precision), decoder.chunk)  # fmt: skip
    scores = score_stored_cases(model, decoder, cases, latents, checkpoint, label_paths, label_map, settings, out_dir)
    table, interfaces = scores_tables(scores, RUN_METRIC_COLUMNS)
    oracle = read_tables(list(oracle_metrics), METRIC_COLUMNS) if oracle_metrics else None
    oracle_walls = read_tables(list(oracle_interfaces), INTERFACE_COLUMNS) if oracle_interfaces else None
    summary = summarise(table, oracle)
    write_csv(metrics_csv, table)
    write_csv(summary_csv, summary)
    write_csv(interfaces_csv, interfaces)
    wall_summary = summarise_interfaces(interfaces, oracle_walls)
    write_csv(interface_summary_csv, wall_summary)
    if scores_csv is not None:
        write_csv(scores_csv, scores_table(summary))
    if walls_csv is not None:
        write_csv(walls_csv, walls_table(wall_summary))
    log_means(summary, len(cases))
    return table


def score_stored_cases(
    model: VecSetAutoEncoder, decoder: GridDecoder, cases: list[tuple[str, Path]], latents: Path, checkpoint: Path,
    label_paths: dict[str, str], label_map: dict[str, int], settings: EvalSettings, out_dir: Path,
) -> CaseScores:  # fmt: skip
    """Each case reconstructed from its stored latent sets and scored: the fitted set (meshes and label map written
    under ``out_dir``/case) and, where the fit moved it, the encoder's own set beside it (nothing written)."""
    digest = file_digest(checkpoint)
    scores, encoder_s = CaseScores(), 0.0
    bar = tqdm(cases, desc="reconstruct", unit="case", file=sys.stderr, mininterval=2.0)
    for case, path in bar:
        truth = CaseTruth.read(case, label_paths[case], label_map)
        center, scale = load_normalisation(path, case, (truth.affine, truth.shape))
        z, encoded = stored_latents(latents / f"{case}.npz", digest, checkpoint)
        args = (center, scale, truth, label_map, decoder, out_dir / case, settings.tubular)
        fitted = score_case(case, latent_sdf(model, z, settings.precision), *args)
        encoder = fitted
        if not torch.equal(z, encoded):  # the fit moved it: the encoder's set is a reconstruction of its own
            started = time.perf_counter()
            encoder = score_case(case, latent_sdf(model, encoded, settings.precision), *args, write=False)
            encoder_s += time.perf_counter() - started
        scores.extend(beside_encoder(fitted, encoder))
    if encoder_s:
        log.info("the encoder's latent sets scored beside the fitted ones: %.1f s for %d cases", encoder_s, len(cases))
    return scores


def log_means(summary: pd.DataFrame, n_cases: int) -> None:
    """The mean Dice per structure, fitted and encoder sets, and the tubes' mean clDice, in the job's log."""
    for label, suffix in (("fitted", ""), ("encoder", ENCODER)):
        line = ", ".join(f"{r['structure']} {r[f'dice{suffix}_mean']:.3f}" for _, r in summary.iterrows())
        log.info("mean Dice over %d validation cases, %s latent sets: %s", n_cases, label, line)
    tubes = summary.dropna(subset=["cldice_mean"])
    if len(tubes):
        line = ", ".join(f"{r.structure} {r.cldice_mean:.3f}" for r in tubes.itertuples())
        log.info("mean clDice (fitted): %s", line)
