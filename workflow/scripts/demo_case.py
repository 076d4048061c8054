"""Write one demo phantom label map (rule demo_case)."""

from vecset.data.phantom import write_phantom
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
run_job(
    sm.log[0],
    write_phantom,
    outputs=list(sm.output),
    path=sm.output.labels,
    seed=[sm.params.seed, int(sm.wildcards.case.rsplit("_", 1)[-1])],
    labels=sm.params.labels,
    size=sm.params.size,
)
