# The ceiling of the evaluation setting: each validation case's own exact SDF through the same grid, label map and
# metrics as a reconstruction. Per case, on CPUs, beside training (it needs no run).
rule oracle:
    input:
        meshes="results/meshes/{case}",
        samples="results/samples/{case}.npz",
        labels=case_label_map,
    output:
        metrics="results/oracle/{case}/metrics.csv",
        interfaces="results/oracle/{case}/interfaces.csv",
    log:
        "results/logs/oracle/{case}.log",
    benchmark:
        "results/benchmarks/oracle/{case}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: SETTINGS.threads.sample
    resources:
        mem_mb=lambda wc: oracle_memory_mb(),
    params:
        labels=SETTINGS.labels,
        eval=eval_params("oracle"),
    script:
        "../workflow/scripts/oracle.py"


rule evaluate:
    input:
        settings="results/train/{run}/settings.json",
        checkpoint="results/train/{run}/checkpoint-best.pt",
        # The validation cases' latent sets as encode stored them: the sets scored are the sets kept.
        latents="results/latents/{run}",
        val=lambda wc: run_split(wc)["val"],
        samples=run_val_files("results/samples/{case}.npz"),
        labels=run_val_labels,
        oracle_metrics=run_val_files("results/oracle/{case}/metrics.csv"),
        oracle_interfaces=run_val_files("results/oracle/{case}/interfaces.csv"),
    output:
        metrics=report(
            "results/eval/{run}/metrics.csv",
            caption="../workflow/report/metrics.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "metrics per case and structure"},
        ),
        summary=report(
            "results/eval/{run}/summary.csv",
            caption="../workflow/report/summary.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "summary per structure"},
        ),
        scores=report(
            "results/eval/{run}/scores.csv",
            caption="../workflow/report/scores.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "scores: encoder, fitted, oracle"},
        ),
        walls=report(
            "results/eval/{run}/walls.csv",
            caption="../workflow/report/walls.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "shared walls: the worst pairs"},
        ),
        interfaces="results/eval/{run}/interfaces.csv",
        interface_summary="results/eval/{run}/interface_summary.csv",
        cases=directory("results/eval/{run}/cases"),
    log:
        "results/logs/evaluate/{run}.log",
    benchmark:
        "results/benchmarks/evaluate/{run}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: lambda wc: inference_resources(wc).threads
    resources:
        gpu=lambda wc: inference_resources(wc).gpus,
        mem_mb=lambda wc: inference_resources(wc).mem_mb,
    params:
        label_paths=lambda wc: {case: label_path(case) for case in run_val_cases(wc)},
        labels=SETTINGS.labels,
        eval=eval_params("evaluate"),
    script:
        "../workflow/scripts/evaluate.py"


rule encode:
    input:
        unpack(run_split),
        settings="results/train/{run}/settings.json",
        checkpoint="results/train/{run}/checkpoint-best.pt",
    output:
        latents=directory("results/latents/{run}"),
    log:
        "results/logs/encode/{run}.log",
    benchmark:
        "results/benchmarks/encode/{run}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: lambda wc: inference_resources(wc).threads
    resources:
        gpu=lambda wc: inference_resources(wc).gpus,
        mem_mb=lambda wc: inference_resources(wc).mem_mb,
    params:
        eval=eval_params("encode"),
    script:
        "../workflow/scripts/encode.py"


rule plots:
    input:
        training="results/train/{run}/metrics.jsonl",
        metrics="results/eval/{run}/metrics.csv",
        summary="results/eval/{run}/summary.csv",
        interfaces="results/eval/{run}/interfaces.csv",
        interface_summary="results/eval/{run}/interface_summary.csv",
        cases="results/eval/{run}/cases",
        labels=run_val_labels,
        meshes=run_val_files("results/meshes/{case}"),
    output:
        curves=report(
            "results/eval/{run}/plots/training_curves.png",
            caption="../workflow/report/training_curves.rst",
            category="Training",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "training curves"},
        ),
        boxes=report(
            "results/eval/{run}/plots/dice_hd95.png",
            caption="../workflow/report/dice_hd95.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "Dice and HD95 per structure"},
        ),
        slices=report(
            "results/eval/{run}/plots/slices.png",
            caption="../workflow/report/slices.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "input vs reconstruction"},
        ),
        tables=report(
            "results/eval/{run}/tables.html",
            caption="../workflow/report/tables.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={
                "run": "{run}",
                "figure": "tables: structures, shared walls, cases",
            },
        ),
        viewer=report(
            "results/eval/{run}/viewer.html",
            caption="../workflow/report/viewer.rst",
            category="Evaluation",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "3D view: input vs reconstruction"},
        ),
    log:
        "results/logs/plots/{run}.log",
    conda:
        "../envs/vecset.yaml"
    params:
        label_paths=lambda wc: {case: label_path(case) for case in run_val_cases(wc)},
        labels=SETTINGS.labels,
        n_cases=SETTINGS.eval.render_cases,
    script:
        "../workflow/scripts/plots.py"
