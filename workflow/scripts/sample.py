"""Sample one case's meshes with exact per-structure SDF (rule sample)."""

from vecset.data.preprocess import sample_case
from vecset.data.samples import SampleSettings
from vecset.jobs import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
run_job(
    sm.log[0],
    sample_case,
    qc_path=sm.input.qc,
    mesh_paths=list(sm.input.meshes),
    case_id=sm.wildcards.case,
    out_path=sm.output.samples,
    settings=SampleSettings(
        n_surface=sm.params.n_surface,
        n_volume=sm.params.n_volume,
        n_near=sm.params.n_near,
        near_noise=tuple(sm.params.near_noise),
        fit=sm.params.fit,
        seed=sm.params.seed,
        sign=sm.params.sign,
    ),
    threads=sm.threads,
)
