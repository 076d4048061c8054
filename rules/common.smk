# Config validation, the case list and path helpers: defined once, used by every rule file.
import json
import os
import re
import signal

from snakemake.utils import min_version

from vecset.config import ConfigError, load_schema, validate_config
from vecset.data.samples import FORMAT_VERSION as SAMPLE_FORMAT_VERSION
from vecset.train.settings import run_settings

min_version("8.0")

# SLURM's --signal=USR1@T for the train job reaches every process of the job step, including the snakemake
# that runs the job there, whose default action on SIGUSR1 is to die at once, so the job step would end
# and the ranks be killed before they save. Snakemake ignores it; workflow/scripts/train.py handles it.
# Outside the main thread (an API caller) signal() raises ValueError: nothing to protect there.
try:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
except ValueError:
    pass


try:
    _validated = validate_config(
        config,
        load_schema(workflow.source_path("../workflow/schemas/config.schema.yaml")),
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

STRUCTURES = list(config["labels"])
DEMO = config["input_dir"] == ""


def discover_cases():
    """Case ids at parse time: the demo ids, or every file matching input_pattern in input_dir."""
    if DEMO:
        found = [f"demo_{i:03d}" for i in range(config["demo"]["n_cases"])]
    else:
        if not os.path.isdir(config["input_dir"]):
            raise WorkflowError(
                f"config key 'input_dir': folder {config['input_dir']!r} does not exist; "
                "fix the path, or set input_dir: '' for the demo data"
            )
        pattern = os.path.join(config["input_dir"], config["input_pattern"])
        found = sorted(set(glob_wildcards(pattern).case))
        if not found:
            raise WorkflowError(
                f"no input files match {pattern!r}; check input_dir and input_pattern"
            )
    excluded = set(config["exclude"])
    return [c for c in found if c not in excluded]


CASES = discover_cases()


wildcard_constraints:
    case="[^/]+",
    structure="[A-Za-z][A-Za-z0-9_]*",
    run="[A-Za-z0-9][A-Za-z0-9_.-]*",


FOLDS = config["split"]["folds"]
try:
    RUNS = {
        name: run_settings(config["train"], overrides, FOLDS, name)
        for name, overrides in config["runs"].items()
    }
except ValueError as err:
    raise WorkflowError(str(err)) from None


def label_path(case):
    """The label NIfTI of one case: a generated phantom for the demo, else the user's file."""
    if DEMO:
        return f"results/demo/{case}.nii.gz"
    return os.path.join(config["input_dir"], config["input_pattern"].format(case=case))


def case_label_map(wildcards):
    return label_path(wildcards.case)


def case_meshes(case="{case}"):
    """The per-structure PLY paths of one case, in class order."""
    return [f"results/meshes/{case}/{s}.ply" for s in STRUCTURES]


def split_dir(fold=None):
    """Folder of train.csv / val.csv: results/splits, or results/splits/fold{k} with k-fold splits."""
    return "results/splits" if FOLDS < 2 else f"results/splits/fold{fold or 0}"


def split_outputs():
    """Every CSV written by the split step (one train and val pair per fold)."""
    folds = range(FOLDS) if FOLDS >= 2 else [None]
    return [f"{split_dir(k)}/{side}.csv" for k in folds for side in ("train", "val")]


def run_split(wildcards):
    """The train and val CSVs of one run's fold."""
    folder = split_dir(RUNS[wildcards.run]["fold"])
    return {"train": f"{folder}/train.csv", "val": f"{folder}/val.csv"}


def train_resources(run):
    return RUNS[run]["resources"]


def train_ranks(run):
    """Ranks per node: one per GPU, or the configured number of CPU ranks."""
    resources = train_resources(run)
    return resources["gpus"] or resources["cpu_ranks"]


def train_nodes(run):
    return train_resources(run)["nodes"]


def preemption_signal(run):
    """sbatch option asking SLURM for SIGUSR1 signal_margin_s seconds before the time limit ('' for none)."""
    margin = train_resources(run)["signal_margin_s"]
    return f"--signal=USR1@{margin}" if margin else ""


def run_pattern(runs):
    """A {run} wildcard constraint matching exactly these run names (and nothing when there are none)."""
    return "|".join(re.escape(run) for run in runs) or "(?!)"


SINGLE_NODE_RUNS = [run for run in RUNS if train_nodes(run) == 1]
MULTI_NODE_RUNS = [run for run in RUNS if train_nodes(run) > 1]


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
            "results/latents/{run}",
        ],
        run=list(RUNS),
    )


def final_targets():
    """The targets of the default run: every case's sample file and every configured run's checkpoints."""
    return expand("results/samples/{case}.npz", case=CASES) + run_targets()
