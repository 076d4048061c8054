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
    threads: config["threads"]["mesh"]
    resources:
        mem_mb=4000,
        case_slots=1,
    params:
        labels=config["labels"],
        ignore_unknown=config["ignore_unknown_labels"],
        padding=config["mesh"]["padding"],
    script:
        "../workflow/scripts/mesh.py"
