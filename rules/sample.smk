rule sample:
    input:
        meshes="results/meshes/{case}",
    output:
        samples="results/samples/{case}.npz",
    log:
        "results/logs/sample/{case}.log",
    benchmark:
        "results/benchmarks/sample/{case}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: SETTINGS.threads.sample
    resources:
        mem_mb=4000,
    params:
        samples=as_dict(SETTINGS.samples),
        fit=SETTINGS.normalisation.fit,
        seed=SETTINGS.seed,
        format_version=SAMPLE_FORMAT_VERSION,
    script:
        "../workflow/scripts/sample.py"
