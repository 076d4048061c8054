"""Per-case jobs on a real SLURM cluster: how many sbatch calls, and how many jobs really run side by side, for
the profile's design (job arrays) against the two others: one SLURM job per Snakemake job, and groups of all
cases in one SLURM job (the design before issue 14). Needs a running cluster (tests/slurm/start_cluster.sh as
root starts the single-node test cluster)::

    python bench/slurm_cases.py [--cases 8]
    python bench/slurm_cases.py --smoke    # (tests/test_benches.py, on the test cluster): 1 case, arrays only

Each variant runs the demo's per-case chain (demo_case → mesh → sample) for ``--cases`` new cases through
``--profile profiles/slurm`` with only that part of the profile changed. A job's run interval is [end - s, end]:
``s`` from its benchmark file, the end from that file's birth time (Snakemake re-stamps outputs' modification
times after a SLURM job, so mtimes would look overlapped). Per-case memory is set to 2.5 GB so that 8 cases fit
the 23 GB test node side by side in every variant (a group job asks for the sum of one layer of its members).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PER_CASE = ("demo_case", "mesh", "sample")
TEST_CLUSTER = [
    "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "3",
    "--latency-wait", "5",
]  # fmt: skip


def profile_variant(name: str, cases: int) -> dict:
    """profiles/slurm with its per-case part replaced by the variant's."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"] = dict(profile["default-resources"], mem_mb=2500)
    resources = dict(profile["set-resources"])
    for rule in PER_CASE:
        resources[rule] = dict(resources.get(rule, {}), mem_mb=2500)
    profile["set-resources"] = resources
    if name != "arrays":
        profile.pop("slurm-array-jobs")
        profile.pop("slurm-array-limit")
    if name == "groups":
        profile["groups"] = {rule: "per_case" for rule in PER_CASE}
        profile["group-components"] = {"per_case": cases}
    return profile


def job_ids() -> dict[str, str]:
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%k"], capture_output=True, text=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


def run_interval(benchmark: Path) -> tuple[float, float]:
    end = float(subprocess.run(["stat", "-c", "%W", str(benchmark)], capture_output=True, text=True).stdout)
    seconds = float(benchmark.read_text().splitlines()[1].split("\t")[0])
    return end - seconds, end


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def measure(name: str, cases: int, root: Path) -> dict[str, float]:
    work = root / name
    (work / "profile").mkdir(parents=True)
    (work / "profile/config.yaml").write_text(yaml.safe_dump(profile_variant(name, cases)))
    samples = {"n_surface": 20000, "n_volume": 20000, "n_near": 20000}
    config = {"demo": {"n_cases": cases}, "samples": samples, "threads": {"mesh": 1, "sample": 1}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "config.yaml"), "--profile", str(work / "profile"), *TEST_CLUSTER,
               "--until", "sample"]  # fmt: skip
    before = job_ids()
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{name}: snakemake failed:\n{proc.stderr[-3000:]}")
    new = [job for job in job_ids() if job not in before]
    runs = [run_interval(p) for p in sorted((work / "results/benchmarks").rglob("*.tsv"))]
    pairs = sum(1 for a, b in itertools.combinations(runs, 2) if a[0] < b[1] and b[0] < a[1])
    return {
        "wall_s": wall,
        "work_s": sum(b - a for a, b in runs),
        "sbatch": len({job.split("_")[0] for job in new}),
        "jobs": len(runs),
        "overlapping": pairs,
        "pairs": len(runs) * (len(runs) - 1) // 2,
        "at_once": most_at_once(runs),
    }


VARIANTS = {"groups": "groups of all cases (before)", "individual": "one SLURM job per job", "arrays": "arrays"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list; the first is the baseline")
    parser.add_argument("--smoke", action="store_true", help="1 case, the arrays variant only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cases, args.variants = 1, "arrays"
    if shutil.which("squeue") is None:
        raise SystemExit("no SLURM here: start the test cluster with tests/slurm/start_cluster.sh (as root)")
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="vecset-slurm-cases-") as tmp:
        for name, label in variants.items():
            print(f"[{time.strftime('%H:%M:%S')}] {label} …", file=sys.stderr, flush=True)
            rows.append((label, measure(name, args.cases, Path(tmp))))
    base = rows[0][1]["wall_s"]
    print(f"{args.cases} demo cases (demo_case, mesh, sample) through profiles/slurm on this cluster")
    header = ["per-case design", "wall s", f"vs {rows[0][0]}", "job work s", "sbatch calls", "jobs"]
    header.append("overlapping pairs")
    print("| " + " | ".join([*header, "most at once"]) + " |")
    print("|---" * (len(header) + 1) + "|")
    for label, m in rows:
        print(f"| {label} | {m['wall_s']:.0f} | {m['wall_s'] / base:.2f} | {m['work_s']:.0f} | {m['sbatch']:.0f} | "
              f"{m['jobs']:.0f} | {m['overlapping']:.0f} of {m['pairs']:.0f} | {m['at_once']:.0f} |")  # fmt: skip
    label, last = rows[-1]
    print(f"{label}: {last['jobs']:.0f} jobs in {last['sbatch']:.0f} sbatch calls, "
          f"at most {last['at_once']:.0f} running at once")  # fmt: skip


if __name__ == "__main__":
    main()
