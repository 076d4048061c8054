"""Figures and pages of one run for the report (rule plots): curves, box plots, slices, tables, 3D view."""

import logging
from pathlib import Path

from vecset.eval.plots import plot_run
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
drawn = run_job(
    sm.log[0],
    plot_run,
    outputs=list(sm.output),
    run=sm.wildcards.run,
    training_log=sm.input.training,
    metrics_csv=sm.input.metrics,
    summary_csv=sm.input.summary,
    interfaces_csv=sm.input.interfaces,
    interface_summary_csv=sm.input.interface_summary,
    cases_dir=sm.input.cases,
    label_paths=sm.params.label_paths,
    mesh_dirs={Path(folder).name: folder for folder in sm.input.meshes},
    label_map=dict(sm.params.labels),
    n_cases=sm.params.n_cases,
    curves_png=sm.output.curves,
    boxes_png=sm.output.boxes,
    slices_png=sm.output.slices,
    tables_html=sm.output.tables,
    viewer_html=sm.output.viewer,
)
logging.getLogger("vecset").info("slices and 3D view drawn for %s", ", ".join(drawn))
