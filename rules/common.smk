# The settings, the cases, the runs and the path helpers every rule file uses, defined once. What they are
# built from lives in the package: vecset.settings (every key declared once) and vecset.snakemake_adapter.
import functools
import os
import re
from pathlib import Path

from snakemake.utils import min_version

from vecset import snakemake_adapter
from vecset.data.contract import FORMAT_VERSION as SAMPLE_FORMAT_VERSION
from vecset.preemption import ignore_stop_signal_in_workflow, mark_workflow_process
from vecset.settings import as_dict, rule_params

min_version("8.0")

ignore_stop_signal_in_workflow()  # SLURM's SIGUSR1 is for the training ranks (vecset.preemption)
mark_workflow_process()  # a train job stops when this process ends, not when the shell that started it does
# For envs/vecset.post-deploy.sh: a conda environment installs the package from this checkout.
os.environ.setdefault("VECSET_SOURCE", str(Path(workflow.basedir).resolve()))


@functools.cache
def mesh_memory_mb():
    """Every mesh job's memory request: what the largest label image of the run needs, from the headers alone.
    One value for all cases because SLURM array jobs (profiles/slurm) take the first task's request for all.
    """
    from vecset.data import label_image

    return max(
        (
            label_image.mesh_memory_mb(label_path(case), SETTINGS.mesh.max_voxels)
            for case in CASES
        ),
        default=0,
    )


def oracle_memory_mb():
    """An oracle job's memory: its label image's (as a mesh job) plus its grid and the decoder's buffers."""
    from vecset.eval.decode import grid_memory_mb

    return mesh_memory_mb() + grid_memory_mb(SETTINGS.eval, len(STRUCTURES))


# Typed settings for the rules; a rule's params are plain values (as_dict), the only ones whose changes
# Snakemake records and reruns for.
SETTINGS, RUNS = snakemake_adapter.load_config(
    config, snakemake_adapter.command_line_sources(workflow.config_settings)
)
CASES, SKIPPED_INPUTS = snakemake_adapter.discover_cases(SETTINGS)
STRUCTURES = list(SETTINGS.labels)
FOLDS = SETTINGS.split.folds


wildcard_constraints:
    case="[^/]+",
    structure="[A-Za-z][A-Za-z0-9_]*",
    run="[A-Za-z0-9][A-Za-z0-9_.-]*",


def label_path(case):
    """The label NIfTI of one case: a generated phantom for the demo, else the user's file."""
    if SETTINGS.demo_data:
        return f"results/demo/{case}.nii.gz"
    return os.path.join(SETTINGS.input_dir, SETTINGS.input_pattern.format(case=case))


def case_label_map(wildcards):
    return label_path(wildcards.case)


def split_dir(fold=None):
    """Folder of train.csv / val.csv: results/splits, or results/splits/fold{k} with k-fold splits."""
    return "results/splits" if FOLDS < 2 else f"results/splits/fold{fold or 0}"


def split_outputs():
    """Every CSV written by the split step (one train and val pair per fold)."""
    folds = range(FOLDS) if FOLDS >= 2 else [None]
    return [f"{split_dir(k)}/{side}.csv" for k in folds for side in ("train", "val")]


def run_split(wildcards):
    """The train and val CSVs of one run's fold."""
    folder = split_dir(RUNS[wildcards.run].fold)
    return {"train": f"{folder}/train.csv", "val": f"{folder}/val.csv"}


@functools.cache
def val_cases(fold):
    """The validation cases of a fold, at parse time: the split is a pure function of the case ids and the seed
    (vecset.data.split), so the split rule's val.csv lists exactly these."""
    from vecset.data.split import split_cases

    return split_cases(CASES, SETTINGS.split, SETTINGS.seed, fold or 0)[1]


def run_val_cases(wildcards):
    return val_cases(RUNS[wildcards.run].fold)


def run_val_files(pattern):
    """An input function: ``pattern`` (with {case}) for each validation case of the run."""
    return lambda wildcards: expand(pattern, case=run_val_cases(wildcards))


def run_val_labels(wildcards):
    return [label_path(case) for case in run_val_cases(wildcards)]


def train_resources(wildcards):
    """What one run's training job asks for (vecset.settings.TrainResources)."""
    return RUNS[wildcards.run].train.resources


def eval_params(rule):
    """The eval settings declared to rerun ``rule`` (vecset.settings.rule_params), as its params: a change to one of
    them reruns that rule's jobs, a change to another does not."""
    return rule_params(SETTINGS.eval, rule)


def inference_resources(wildcards):
    """What one run's evaluate and encode jobs ask for: a GPU when the run trains on GPUs (TrainResources.inference)."""
    return train_resources(wildcards).inference()


def train_sbatch_options(wildcards):
    """sbatch options of a train job: SIGUSR1 signal_margin_s seconds before the time limit (none at 0), and no
    requeue by SLURM: a job whose node failed fails, and the profile's retry resubmits it at once, counted, where
    SLURM's requeue would hold it back two minutes under the same job id."""
    margin = train_resources(wildcards).signal_margin_s
    return " ".join(([f"--signal=USR1@{margin}"] if margin else []) + ["--no-requeue"])


def run_pattern(runs):
    """A {run} wildcard constraint matching exactly these run names (and nothing when there are none)."""
    return "|".join(re.escape(run) for run in runs) or "(?!)"


SINGLE_NODE_RUNS = [
    name for name, run in RUNS.items() if run.train.resources.nodes == 1
]
MULTI_NODE_RUNS = [name for name, run in RUNS.items() if run.train.resources.nodes > 1]


def run_targets():
    """Each run's checkpoints and evaluation: asked for directly, so a run whose training failed or was
    preempted is resumed by the next invocation even though an older evaluation exists.
    """
    return expand(
        [
            "results/train/{run}/checkpoint-best.pt",
            "results/train/{run}/checkpoint-last.pt",
            "results/eval/{run}/summary.csv",
            "results/eval/{run}/plots/training_curves.png",
            "results/eval/{run}/plots/dice_hd95.png",
            "results/eval/{run}/plots/slices.png",
            "results/eval/{run}/tables.html",
            "results/eval/{run}/viewer.html",
            "results/latents/{run}",
        ],
        run=list(RUNS),
    )


def final_targets():
    """The targets of the default run: every case's sample file and every configured run's checkpoints."""
    return expand("results/samples/{case}.npz", case=CASES) + run_targets()
