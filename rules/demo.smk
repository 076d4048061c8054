rule demo_case:
    output:
        labels="results/demo/{case}.nii.gz",
    log:
        "results/logs/demo_case/{case}.log",
    benchmark:
        "results/benchmarks/demo_case/{case}.tsv"
    conda:
        "../envs/vecset.yaml"
    resources:
        mem_mb=lambda wc: 8000 if config["demo"]["size"] == "real" else 1000,
        case_slots=1,
    params:
        labels=config["labels"],
        seed=config["seed"],
        size=config["demo"]["size"],
    script:
        "../workflow/scripts/demo_case.py"
