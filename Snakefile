# Cardiac label maps → per-structure meshes → exact SDF samples → split → VecSet training → evaluate.
# Report: snakemake --report report.html
# Dry run: snakemake -n    Run: snakemake --cores N    Cluster: snakemake --profile profiles/slurm


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/mesh.smk"
include: "rules/sample.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        final_targets(),
