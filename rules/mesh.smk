rule mesh:
    input:
        labels=case_label_map,
    output:
        # One folder per case: a PLY per structure and qc.json (vecset.data.preprocess). One output, not eleven:
        # Snakemake plans a 1000-case DAG faster (bench/dryrun.py).
        meshes=directory("results/meshes/{case}"),
    log:
        "results/logs/mesh/{case}.log",
    benchmark:
        "results/benchmarks/mesh/{case}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: SETTINGS.threads.mesh
    resources:
        # From the label images' headers: a large float volume needs several times its raw size.
        mem_mb=lambda wc: mesh_memory_mb(),
    params:
        labels=SETTINGS.labels,
        ignore_unknown=SETTINGS.ignore_unknown_labels,
        padding=SETTINGS.mesh.padding,
    script:
        "../workflow/scripts/mesh.py"
