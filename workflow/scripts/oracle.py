"""Score one validation case's own exact SDF as a reconstruction (rule oracle): the evaluation's ceiling."""

from pathlib import Path

import torch

from vecset.eval.oracle import oracle_case
from vecset.settings import EvalSettings, build
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
torch.set_num_threads(sm.threads)
run_job(
    sm.log[0],
    oracle_case,
    outputs=list(sm.output),
    case_id=sm.wildcards.case,
    mesh_dir=Path(sm.input.meshes),
    sample_path=Path(sm.input.samples),
    label_path=Path(sm.input.labels),
    label_map=dict(sm.params.labels),
    settings=build(EvalSettings, sm.params.eval),
    metrics_csv=Path(sm.output.metrics),
    interfaces_csv=Path(sm.output.interfaces),
    threads=sm.threads,
)
