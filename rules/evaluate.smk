rule evaluate:
    input:
        settings="results/train/{run}/settings.json",
        checkpoint="results/train/{run}/checkpoint-best.pt",
        val=lambda wc: run_split(wc)["val"],
        samples=expand("results/samples/{case}.npz", case=CASES),
        labels=[label_path(case) for case in CASES],
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
        label_paths={case: label_path(case) for case in CASES},
        labels=SETTINGS.labels,
        eval=reconstruction_settings(),
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
        batch_size=SETTINGS.eval.batch_size,
        precision=SETTINGS.eval.precision,
    script:
        "../workflow/scripts/encode.py"


rule plots:
    input:
        training="results/train/{run}/metrics.jsonl",
        metrics="results/eval/{run}/metrics.csv",
        cases="results/eval/{run}/cases",
        labels=[label_path(case) for case in CASES],
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
    log:
        "results/logs/plots/{run}.log",
    conda:
        "../envs/vecset.yaml"
    params:
        label_paths={case: label_path(case) for case in CASES},
        labels=SETTINGS.labels,
        n_cases=SETTINGS.eval.render_cases,
    script:
        "../workflow/scripts/plots.py"
