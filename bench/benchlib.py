"""What several benchmarks share: where the configured runs are, how a benchmark takes one of them (the package's
own loader, vecset.config.load_run), how many CPUs it may keep busy, and its progress lines."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from vecset.config import load_run
from vecset.settings import RunSettings

REPO = Path(__file__).resolve().parents[1]
# The production run: config/imagecas.yaml on config/config.yaml, as `snakemake --configfile` merges them.
PRODUCTION_FILES = (REPO / "config" / "config.yaml", REPO / "config" / "imagecas.yaml")
PRODUCTION_RUN = "imagecas"
DEMO_FILES = (REPO / "config" / "config.yaml",)
DEMO_RUN = "demo"


def configured_run(production: bool, overrides: dict[str, Any] | None = None) -> RunSettings:
    """The production run (config/imagecas.yaml's imagecas) or the demo run (config/config.yaml's demo), with
    ``overrides`` of any train keys on top."""
    if production:
        return load_run(PRODUCTION_FILES, PRODUCTION_RUN, overrides)
    return load_run(DEMO_FILES, DEMO_RUN, overrides)


def spare_cpus(reserve: int = 2) -> int:
    """The CPUs a benchmark may keep busy: all but ``reserve`` (the machine stays reachable), at least one."""
    return max(1, (os.cpu_count() or 1) - reserve)


def log(text: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- reading a dry run, and a login node without SLURM (benchmarks and tests) --------------------------------


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Jobs per rule in the output of ``snakemake -n`` ({} when there is nothing to do)."""
    if "Nothing to be done" in dry_run_output:
        return {}
    table = dry_run_output.split("Job stats:", 1)[1]
    counts = {}
    for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE):
        if name == "total":
            break
        counts[name] = int(count)
    return counts


SLURM_TOOLS = frozenset({"sbatch", "srun", "squeue", "sacct", "sinfo", "scontrol", "scancel", "salloc", "sacctmgr"})


def path_without_slurm(folder: Path, path: str | None = None) -> str:
    """A PATH (one ``folder`` of links) with the tools of ``path`` (default: this process's PATH) minus SLURM's:
    what a login node without SLURM has."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in (path if path is not None else os.environ["PATH"]).split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = folder / entry.name
            if entry.name not in SLURM_TOOLS and not os.path.lexists(target):
                target.symlink_to(entry.path)
    return str(folder)
