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
        mem_mb=8000 if SETTINGS.demo.size == "real" else 1000,
    params:
        labels=SETTINGS.labels,
        seed=SETTINGS.seed,
        size=SETTINGS.demo.size,
    script:
        "../workflow/scripts/demo_case.py"
