"""Dry-run time over many cases, plain and through the SLURM profile on a "login node" (no SLURM tools on
PATH), and the number of SLURM jobs the profile would submit.

    python bench/dryrun.py [--cases 1000] [--repeats 3]
    python bench/dryrun.py --smoke      # CPU smoke run (tests/test_benches.py): 3 cases, once, own data only

Baseline in the same run: the plain `snakemake -n` over the same cases. Target (issue 14): the SLURM-profile
dry run over 1000 cases in at most 10 s, for the demo data and for own data. The last line:
`dry run over <N> cases through the SLURM profile: <S> s own data, <T> s demo (<J> jobs, <K> sbatch calls)` (own data
only with --smoke).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from vecset.data.label_image import write_label_image
from vecset.data.phantom import make_phantom

from benchlib import path_without_slurm, planned_jobs

REPO = Path(__file__).resolve().parents[1]


def input_folder(folder: Path, cases: int) -> Path:
    """``cases`` label files (copies of one small phantom; a dry run only looks at names and dates)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = yaml.safe_load((REPO / "config/config.yaml").read_text())["labels"]
    volume, affine = make_phantom(0, labels, "demo", shape=(24, 24, 16))
    write_label_image(folder / "case_0000.nii.gz", volume, affine)
    for i in range(1, cases):
        shutil.copyfile(folder / "case_0000.nii.gz", folder / f"case_{i:04d}.nii.gz")
    return folder


def dry_run(workdir: Path, data: list[str], extra: list[str], env: dict[str, str]) -> tuple[float, dict[str, int]]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "config/config.yaml"), "-n", "--config", *data, *extra]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, planned_jobs(proc.stdout)


def local_rules() -> set[str]:
    """`all` and the rules named under ``localrules:`` in rules/*.smk: Snakemake runs them itself, no SLURM job."""
    text = "\n".join(path.read_text() for path in sorted((REPO / "rules").glob("*.smk")))
    blocks = re.findall(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", text, flags=re.MULTILINE)
    return {"all"} | {name for block in blocks for name in re.findall(r"\w+", block)}


def slurm_jobs(counts: dict[str, int], profile: dict) -> int:
    """Fewest sbatch calls the profile makes: rules named in slurm-array-jobs go as arrays of at most
    slurm-array-limit tasks (more where their jobs become ready at different times), every other rule that is
    not local as one job per job."""
    arrays = {r.strip() for r in str(profile.get("slurm-array-jobs", "")).replace(";", ",").split(",") if r.strip()}
    limit = int(profile.get("slurm-array-limit", 1000))
    local = local_rules()
    submitted = 0
    for rule, n in counts.items():
        if rule in local:
            continue
        submitted += math.ceil(n / limit) if rule in arrays or "all" in arrays else n
    return submitted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="3 cases, once, own data only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases, args.repeats = 3, 1
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        login_env = {**os.environ, "PATH": path_without_slurm(tmp / "bin")}
        slurm = ["--profile", str(REPO / "profiles/slurm")]
        folder = input_folder(tmp / "inputs", args.cases)
        own = [f"input_dir={folder}"]
        demo = [f"demo={{n_cases: {args.cases}}}"]
        variants = {
            "own data, plain -n (baseline)": (own, [], dict(os.environ)),
            "own data, --profile profiles/slurm -n, no SLURM tools": (own, slurm, login_env),
            "demo data, plain -n": (demo, [], dict(os.environ)),
            "demo data, --profile profiles/slurm -n, no SLURM tools": (demo, slurm, login_env),
        }
        if args.smoke:
            variants = {name: variant for name, variant in variants.items() if name.startswith("own data")}
        rows: list[tuple[str, float, int, dict[str, int]]] = []
        for name, (data, extra, env) in variants.items():
            workdir = tmp / re.sub(r"\W+", "_", name)
            workdir.mkdir()
            times: list[float] = []
            counts: dict[str, int] = {}
            for _ in range(args.repeats):
                seconds, counts = dry_run(workdir, data, extra, env)
                times.append(seconds)
            rows.append((name, statistics.median(times), sum(counts.values()), counts))
        shutil.rmtree(tmp / "bin", ignore_errors=True)
    base = rows[0][1]
    print(f"dry run over {args.cases} cases, median of {args.repeats}")
    print("| variant | median s | ratio | jobs planned | sbatch calls, at least |")
    print("|---|---|---|---|---|")
    for name, median, total, counts in rows:
        submitted: int | str = slurm_jobs(counts, profile) if "profile" in name else "-"
        print(f"| {name} | {median:.1f} | {median / base:.2f} | {total} | {submitted} |")
    own_data, sbatch = rows[1], slurm_jobs(rows[1][3], profile)
    demo_data = f", {rows[3][1]:.1f} s demo" if len(rows) > 3 else ""
    print(f"dry run over {args.cases} cases through the SLURM profile: {own_data[1]:.1f} s own data{demo_data} "
          f"({own_data[2]} jobs, {sbatch} sbatch calls)")  # fmt: skip


if __name__ == "__main__":
    main()
