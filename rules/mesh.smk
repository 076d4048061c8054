rule mesh:
    input:
        labels=case_label_map,
    output:
        qc="results/meshes/{case}/qc.json",
        meshes=case_meshes(),
    log:
        "results/logs/mesh/{case}.log",
    benchmark:
        "results/benchmarks/mesh/{case}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: SETTINGS.threads.mesh
    resources:
        # From the label image's header: a large float volume needs several times its raw size.
        mem_mb=lambda wc, input: mesh_memory_mb(input.labels),
        case_slots=1,
    params:
        labels=SETTINGS.labels,
        ignore_unknown=SETTINGS.ignore_unknown_labels,
        padding=SETTINGS.mesh.padding,
    script:
        "../workflow/scripts/mesh.py"
