# Config validation, the case list and path helpers: defined once, used by every rule file.
import os

from snakemake.utils import min_version

from vecset.config import ConfigError, load_schema, validate_config
from vecset.data.samples import FORMAT_VERSION as SAMPLE_FORMAT_VERSION

min_version("8.0")


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


def case_label_map(wildcards):
    """The label NIfTI of one case: a generated phantom for the demo, else the user's file."""
    if DEMO:
        return f"results/demo/{wildcards.case}.nii.gz"
    return os.path.join(
        config["input_dir"], config["input_pattern"].format(case=wildcards.case)
    )


def case_meshes(case="{case}"):
    """The per-structure PLY paths of one case, in class order."""
    return [f"results/meshes/{case}/{s}.ply" for s in STRUCTURES]


def final_targets():
    """The targets of the default run: every case's sample file."""
    return expand("results/samples/{case}.npz", case=CASES)
