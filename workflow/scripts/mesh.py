"""Validate one case's label map and mesh every structure into its case folder (rule mesh)."""

from vecset.data.preprocess import mesh_case
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
run_job(
    sm.log[0],
    mesh_case,
    outputs=list(sm.output),
    nifti=sm.input.labels,
    case_id=sm.wildcards.case,
    label_map=sm.params.labels,
    out_dir=sm.output.meshes,
    ignore_unknown=sm.params.ignore_unknown,
    padding=sm.params.padding,
    # From the config, not params: raising the bound to admit one large image must not remesh every case.
    max_voxels=sm.config["mesh"]["max_voxels"],
)
