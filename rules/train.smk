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
        excluded=list(SETTINGS.exclude),
        skipped=SKIPPED_INPUTS,
        split=as_dict(SETTINGS.split),
        seed=SETTINGS.seed,
    script:
        "../workflow/scripts/split.py"


# A run's resolved settings and what they imply, as one file: what train, evaluate and encode read. A
# changed setting changes the file, and that reruns training (reason: updated input). Seconds of work, so on
# a cluster it runs where Snakemake runs instead of waiting in the queue.
localrules:
    plan,


rule plan:
    input:
        unpack(run_split),
    output:
        settings="results/train/{run}/settings.json",
    log:
        "results/logs/plan/{run}.log",
    conda:
        "../envs/vecset.yaml"
    params:
        train=lambda wc: as_dict(RUNS[wc.run].train),
        fold=lambda wc: RUNS[wc.run].fold,
        seed=SETTINGS.seed,
        class_names=STRUCTURES,
    script:
        "../workflow/scripts/plan.py"


rule train:
    input:
        unpack(run_split),
        settings="results/train/{run}/settings.json",
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
    threads: lambda wc: train_resources(wc).ranks_per_node * train_resources(wc).cpus_per_rank
    resources:
        gpu=lambda wc: train_resources(wc).gpus,
        mem_mb=lambda wc: train_resources(wc).mem_mb,
        runtime=lambda wc: train_resources(wc).runtime,
        slurm_extra=train_sbatch_options,
    params:
        # Resumable state: deliberately not an output, so a failed or requeued job keeps it.
        state_dir="results/train/{run}/state",
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
            nodes=lambda wc: train_resources(wc).nodes,
            tasks=lambda wc: train_resources(wc).nodes,
            tasks_per_gpu=0,
            gres=lambda wc: (
                f"gpu:{train_resources(wc).gpus}" if train_resources(wc).gpus else ""
            ),
            mem_mb=lambda wc: train_resources(wc).mem_mb,
            runtime=lambda wc: train_resources(wc).runtime,
            slurm_extra=train_sbatch_options,
