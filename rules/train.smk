rule split:
    input:
        samples=expand("results/samples/{case}.npz", case=CASES),
    output:
        csvs=split_outputs(),
        excluded="results/splits/excluded.csv",
    log:
        "results/logs/split.log",
    conda:
        "../envs/vecset.yaml"
    params:
        cases=CASES,
        excluded=config["exclude"],
        val_fraction=config["split"]["val_fraction"],
        folds=FOLDS,
        seed=config["seed"],
    script:
        "../workflow/scripts/split.py"


rule train:
    input:
        unpack(run_split),
    output:
        best="results/train/{run}/checkpoint-best.pt",
        last="results/train/{run}/checkpoint-last.pt",
        metrics="results/train/{run}/metrics.jsonl",
    log:
        "results/logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    conda:
        "../envs/vecset.yaml"
    threads: lambda wc: train_ranks(wc.run) * train_resources(wc.run)["threads_per_rank"]
    resources:
        gpu=lambda wc: train_resources(wc.run)["gpus"],
        mem_mb=lambda wc: train_resources(wc.run)["mem_mb"],
        runtime=lambda wc: train_resources(wc.run)["runtime"],
    params:
        settings=lambda wc: json.dumps(RUNS[wc.run]["settings"], sort_keys=True),
        # Resumable state: deliberately not an output, so a failed or requeued job keeps it.
        state_dir="results/train/{run}/state",
        ranks=lambda wc: train_ranks(wc.run),
    script:
        "../workflow/scripts/train.py"
