"""Run the real workflow through Snakemake's command line in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from vecset.data.split import split_cases
from vecset.settings import SplitSettings

from benchlib import planned_jobs as job_counts
from conftest import REPO
from training_helpers import TINY_TRAIN

# The dataset-level jobs that follow any change to the samples (one run).
DOWNSTREAM = {"split": 1, "plan": 1, "train": 1, "evaluate": 1, "plots": 1, "encode": 1}


def oracle_jobs(cases, changed=(), before=()) -> dict[str, int]:
    """The oracle jobs planned for ``cases`` under the default split (seed 0): one per validation case whose
    sample is new (``changed``) or that was not a validation case among the ``before`` cases (no oracle yet)."""
    val = split_cases(list(cases), SplitSettings(), 0)[1]
    val_before = split_cases(list(before), SplitSettings(), 0)[1] if before else []
    n = len([case for case in val if case in changed or case not in val_before])
    return {"oracle": n} if n else {}


FAST_SAMPLES = {"n_surface": 3000, "n_volume": 2000, "n_near": 2000}
# The tiny model of the training tests, with a progress bar in the job's log.
FAST_TRAIN = {k: v for k, v in TINY_TRAIN.items() if k != "progress"} | {"epochs": 2}


def write_config(workdir: Path, **overrides) -> Path:
    config = {
        "samples": dict(FAST_SAMPLES),
        "threads": {"mesh": 1, "sample": 1},
        "train": FAST_TRAIN,
        "eval": {"resolution": 16},
    }
    config.update(overrides)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """``snakemake --snakefile <repo>/Snakefile --directory <workdir> --configfile <workdir>/config.yaml ARGS``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_command`; raise with its output when ``check`` and it fails."""
    proc = subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Job counts per rule of a dry run ({} when there is nothing to do)."""
    proc = snakemake(workdir, "-n", *args)
    return job_counts(proc.stdout + proc.stderr)


def planned_cases(workdir: Path, rule: str, *args: str) -> list[str]:
    """The {case} wildcards of the jobs of ``rule`` that a dry run would run."""
    proc = snakemake(workdir, "-n", *args)
    text = proc.stdout + proc.stderr
    blocks = re.findall(rf"^rule {rule}:\n(.*?)(?:\n\n|\Z)", text, flags=re.MULTILINE | re.DOTALL)
    return sorted(re.search(r"wildcards: case=(\S+)", b).group(1) for b in blocks)
