"""Reconstruct and score every validation case of one run (rule evaluate)."""

from pathlib import Path

import torch

from vecset.eval.run import evaluate_run
from vecset.settings import EvalSettings, build
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
torch.set_num_threads(sm.threads)
run_job(
    sm.log[0],
    evaluate_run,
    outputs=list(sm.output),
    plan_path=Path(sm.input.settings),
    checkpoint=Path(sm.input.checkpoint),
    latents=Path(sm.input.latents),
    val_csv=Path(sm.input.val),
    label_paths=sm.params.label_paths,
    label_map=dict(sm.params.labels),
    settings=build(EvalSettings, sm.params.eval),
    out_dir=Path(sm.output.cases),
    metrics_csv=Path(sm.output.metrics),
    summary_csv=Path(sm.output.summary),
    interfaces_csv=Path(sm.output.interfaces),
    interface_summary_csv=Path(sm.output.interface_summary),
    scores_csv=Path(sm.output.scores),
    walls_csv=Path(sm.output.walls),
    oracle_metrics=[Path(p) for p in sm.input.oracle_metrics],
    oracle_interfaces=[Path(p) for p in sm.input.oracle_interfaces],
)
