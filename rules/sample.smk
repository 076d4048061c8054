rule sample:
    input:
        qc="results/meshes/{case}/qc.json",
        meshes=case_meshes(),
    output:
        samples="results/samples/{case}.npz",
    log:
        "results/logs/sample/{case}.log",
    benchmark:
        "results/benchmarks/sample/{case}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: config["threads"]["sample"]
    resources:
        mem_mb=4000,
        case_slots=1,
    params:
        n_surface=config["samples"]["n_surface"],
        n_volume=config["samples"]["n_volume"],
        n_near=config["samples"]["n_near"],
        near_noise=config["samples"]["near_noise"],
        sign=config["samples"]["sign"],
        fit=config["normalisation"]["fit"],
        seed=config["seed"],
        format_version=SAMPLE_FORMAT_VERSION,
    script:
        "../workflow/scripts/sample.py"
