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
    wildcard_constraints:
        run=run_pattern(SINGLE_NODE_RUNS),
    conda:
        "../envs/vecset.yaml"
    threads: lambda wc: train_ranks(wc.run) * train_resources(wc.run)["threads_per_rank"]
    resources:
        gpu=lambda wc: train_resources(wc.run)["gpus"],
        mem_mb=lambda wc: train_resources(wc.run)["mem_mb"],
        runtime=lambda wc: train_resources(wc.run)["runtime"],
        slurm_extra=lambda wc: preemption_signal(wc.run),
    params:
        settings=lambda wc: json.dumps(RUNS[wc.run]["settings"], sort_keys=True),
        # Resumable state: deliberately not an output, so a failed or requeued job keeps it.
        state_dir="results/train/{run}/state",
        ranks=lambda wc: train_ranks(wc.run),
        nodes=lambda wc: train_nodes(wc.run),
        gpus=lambda wc: train_resources(wc.run)["gpus"],
    script:
        "../workflow/scripts/train.py"


# Several nodes: the SLURM plugin's MPI mode runs the job script once, on the first node, and the script
# starts one torchrun agent per node with srun. tasks_per_gpu=0 keeps the plugin from turning tasks into
# --ntasks-per-gpu; GPUs are asked per node (gres), not per job.
if MULTI_NODE_RUNS:

    use rule train as train_multinode with:
        wildcard_constraints:
            run=run_pattern(MULTI_NODE_RUNS),
        resources:
            mpi="srun",
            nodes=lambda wc: train_nodes(wc.run),
            tasks=lambda wc: train_nodes(wc.run),
            tasks_per_gpu=0,
            gres=lambda wc: (
                f"gpu:{train_resources(wc.run)['gpus']}"
                if train_resources(wc.run)["gpus"]
                else ""
            ),
            mem_mb=lambda wc: train_resources(wc.run)["mem_mb"],
            runtime=lambda wc: train_resources(wc.run)["runtime"],
            slurm_extra=lambda wc: preemption_signal(wc.run),
