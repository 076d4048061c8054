"""Figures of one run for the report (rule plots): training curves, Dice/HD95 box plots, slices."""

import logging

from vecset.eval.plots import plot_run
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
drawn = run_job(
    sm.log[0],
    plot_run,
    run=sm.wildcards.run,
    training_log=sm.input.training,
    metrics_csv=sm.input.metrics,
    cases_dir=sm.input.cases,
    label_paths=sm.params.label_paths,
    label_map=dict(sm.params.labels),
    n_cases=sm.params.n_cases,
    curves_png=sm.output.curves,
    boxes_png=sm.output.boxes,
    slices_png=sm.output.slices,
)
logging.getLogger("vecset").info("slices drawn for %s", ", ".join(drawn))
