"""Sample one case's meshes with exact per-structure SDF (rule sample)."""

from vecset.data.preprocess import sample_case
from vecset.settings import SampleSettings, build
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
run_job(
    sm.log[0],
    sample_case,
    outputs=list(sm.output),
    mesh_dir=sm.input.meshes,
    case_id=sm.wildcards.case,
    out_path=sm.output.samples,
    settings=build(SampleSettings, sm.params.samples),
    fit=sm.params.fit,
    seed=sm.params.seed,
    threads=sm.threads,
)
