"""Benchmarks are code: every entry point in bench/ runs in its CPU smoke mode and ends with its result line, so a
refactor that breaks a benchmark fails here instead of on the day a GPU machine is lent. `bash bench/gpu.sh
--smoke` runs every section of the GPU script on the CPU (the GPU tests with the CPU standing in). The figures
are not checked (no timing assertions); what each line says is."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from packaging.requirements import Requirement

from vecset.eval.run import METRIC_COLUMNS, summarise

from conftest import DEFAULT_LABELS, REPO

pytestmark = pytest.mark.workflow  # each benchmark runs as a whole program

BENCH = REPO / "bench"
NUMBER = r"[\d.]+"


def run_bench(script: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def result_line(done: subprocess.CompletedProcess, pattern: str) -> re.Match:
    """The run's last line, matched against ``pattern`` (the benchmark's documented result line)."""
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    last = done.stdout.strip().splitlines()[-1]
    found = re.fullmatch(pattern, last)
    assert found, f"last line {last!r} is not {pattern!r}"
    return found


@pytest.fixture(scope="session")
def bench_samples(tmp_path_factory) -> Path:
    """Sample files written by bench/make_samples.py --smoke (which this runs): 2 demo cases with enough surface
    points for the production item's 8192 encoder inputs."""
    out = tmp_path_factory.mktemp("bench") / "samples"
    result_line(run_bench("make_samples.py", str(out), "--smoke"), rf"sample files: 2 in {re.escape(str(out))} .*")
    return out


def entry_points() -> set[str]:
    """bench/*.py files that run as scripts (a ``__main__`` block); the rest are libraries they import."""
    scripts = set()
    for path in BENCH.glob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body):
            scripts.add(path.name)
    return scripts


# Each entry point: its smoke arguments ({samples}: bench_samples, {run}: the trained test run) and result line.
SMOKE = {
    "make_samples.py": None,  # the bench_samples fixture is its smoke run
    "train_step.py": (
        ["--smoke", "--samples", "{samples}"],
        rf"train step tiny batch 2 \(0 workers, uniform input\): {NUMBER} samples/s, data wait {NUMBER}%, "
        rf"{NUMBER}x the seed's",
    ),
    "decode.py": (
        ["--smoke", "--run", "{run}"],
        rf"coarse-to-fine: ({NUMBER})x fewer decoded points, max Dice change ({NUMBER})",
    ),
    "fit_cost.py": (
        ["--smoke", "--samples", "{samples}"],
        r"fit: \d+ training items per case at 20 steps \(upstream\)",
    ),
    "loader.py": (["--smoke", "--samples", "{samples}"], r"loader production items/s per worker: \d+"),
    "preprocess.py": (
        ["--smoke"],
        rf"preprocess: ours {NUMBER}x the seed's time, sign agreement ({NUMBER})% \(seed {NUMBER}%\), 10/10 meshes "
        "closed",
    ),
    "dryrun.py": (
        ["--smoke"],
        rf"dry run over 3 cases through the SLURM profile: {NUMBER} s own data \((\d+) jobs, (\d+) sbatch calls\)",
    ),
    "step_cost.py": (
        ["--smoke", "--samples", "{samples}"],
        r"step cost: shipped defaults \d+ ms per step; 1 variants, batch 1, width 64 at [\d.]+x",
    ),
    "fit_proximal.py": (
        ["--smoke", "--run-dirs", "{run}", "--val", "{val}", "--labels", "{labels}"],
        rf"fit_proximal {NUMBER}: large {NUMBER}, drift median {NUMBER} \(1 runs\)",
    ),
    "partition.py": (
        ["--smoke", "--run-dirs", "{run}", "--val", "{val}", "--labels", "{labels}"],
        rf"partition: worst pair overlap {NUMBER}%, gap {NUMBER}% \(own SDFs {NUMBER}%, {NUMBER}%\); large Dice "
        rf"{NUMBER} \({NUMBER}\); (\d+)/\1 meshes closed; \d+/\d+ touching pairs share vertices \(1 runs\)",
    ),
    "ablations.py": None,  # reads an evaluated run: test_ablations_table_reads_the_evaluations_summaries
    "slurm_cases.py": None,  # needs the SLURM cluster: test_slurm_cases_smoke_runs_per_case_jobs_as_arrays
    "gpu_deps.py": None,  # installs wheels: test_gpu_deps_installs_only_the_failing_imports_from_the_wheel_folder
}


def test_every_bench_entry_point_has_a_smoke_test():
    assert entry_points() == set(SMOKE), "a bench/ script without a smoke test in tests/test_benches.py"


@pytest.mark.parametrize("script", [name for name, smoke in SMOKE.items() if smoke])
def test_bench_smoke_run_ends_with_its_result_line(script, request):
    args, pattern = SMOKE[script]
    filled = []
    for arg in args:
        if arg == "{samples}":
            arg = str(request.getfixturevalue("bench_samples"))
        elif arg == "{run}":
            arg = str(request.getfixturevalue("trained_run"))
        elif arg == "{val}":
            arg = str(request.getfixturevalue("sample_dir") / "splits" / "val.csv")
        elif arg == "{labels}":
            arg = str(Path(next(iter(request.getfixturevalue("val_label_maps").values()))).parent)
        filled.append(arg)
    done = run_bench(script, *filled)
    found = result_line(done, pattern)
    if script == "train_step.py":  # the production run's items, taken from config/imagecas.yaml by the package
        assert "production items (n_input 8192, n_vol 1024, n_near 1024," in done.stdout
    if script == "step_cost.py":  # (params M, × defaults) per variant: the defaults first, each variant its own model
        rows = {
            m.group(1).strip(): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(.+?)\s+([\d.]+)\s+\d+\s+([\d.]+)$", done.stdout, re.MULTILINE)
        }
        assert rows["shipped defaults"] == (0.88, 1.0)  # the tiny preset without the decoder feed-forward
        assert rows["batch 1, width 64"][0] < 0.5 and rows["batch 1, width 64"][1] > 0
    if script == "decode.py":  # coarse-to-fine never decodes more, and changes no structure's Dice
        assert float(found.group(1)) >= 1.0 and float(found.group(2)) <= 0.005
    if script == "preprocess.py":
        assert float(found.group(1)) >= 99.99, "the exact SDF's sign agrees with the winding number"
    if script == "dryrun.py":  # per-case rules go as arrays: fewer sbatch calls than jobs
        assert 0 < int(found.group(2)) < int(found.group(1))


def test_ablations_table_reads_the_evaluations_summaries(tmp_path):
    """bench/ablations.py over an evaluation summary written by the package's own summarise."""
    names = list(DEFAULT_LABELS)
    rows = pd.DataFrame(
        [{"case": f"case_{k}", "structure": name, "status": "ok", "dice": 0.5 + 0.04 * c, "iou": 0.5, "hd95_mm": 1.0,
          "assd_mm": 0.5, "cldice": 0.7 if "coronary" in name or "veins" in name else None, "chamfer_mm": 1.0}
         for k in range(2) for c, name in enumerate(names)],
        columns=METRIC_COLUMNS,
    )  # fmt: skip
    oracle = rows.assign(dice=0.99)
    folder = tmp_path / "results" / "eval" / "demo"
    folder.mkdir(parents=True)
    summarise(rows, oracle).to_csv(folder / "summary.csv", index=False)
    done = run_bench("ablations.py", "--results", str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    header, demo, last = lines[0].split(), lines[1].split(), lines[-1].split()
    large = sum(0.5 + 0.04 * c for c in range(7)) / 7
    assert demo[0] == "demo" and float(demo[header.index("large")]) == pytest.approx(large, abs=1e-3)
    assert last[0] == "oracle" and float(last[header.index("large")]) == pytest.approx(0.99)


@pytest.mark.workflow
@pytest.mark.slurm
def test_slurm_cases_smoke_runs_per_case_jobs_as_arrays(slurm_cluster):
    done = run_bench("slurm_cases.py", "--smoke", timeout=600)
    result_line(done, r"arrays: 3 jobs in 3 sbatch calls, at most 1 running at once")


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel providing the module ``name`` (what pip needs: the module, METADATA, WHEEL,
    RECORD)."""
    dist = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{file},,\n" for file in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
    return path


def test_gpu_deps_installs_only_the_failing_imports_from_the_wheel_folder(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "vecset_gpu_fake", "1.2")
    listing = tmp_path / "list.txt"
    listing.write_text("# import wheel\nyaml pyyaml==0.0.0\nvecset_gpu_fake vecset_gpu_fake==1.2\n")
    target = tmp_path / "site"
    args = ["--wheels", str(wheels), "--target", str(target), "--list", str(listing)]
    done = run_bench("gpu_deps.py", *args)
    # yaml imports here, so its (impossible) pin is never looked for: only the failing import is installed
    result_line(done, rf"gpu deps: installed vecset_gpu_fake==1.2 from {re.escape(str(wheels))} into .*")
    assert (target / "vecset_gpu_fake.py").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    result_line(run_bench("gpu_deps.py", *args, env=env), r"gpu deps: all 2 imports present")
    missing = run_bench(
        "gpu_deps.py", "--wheels", str(tmp_path / "none"), "--target", str(target), "--list", str(listing)
    )
    assert missing.returncode == 1
    assert "run `bash bench/gpu-wheels.sh" in missing.stderr and "vecset_gpu_fake cannot be imported" in missing.stderr


def test_gpu_wheels_are_pinned_within_the_projects_ranges():
    """The wheels a bare GPU machine gets satisfy pyproject.toml (one version each, for what the package imports)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ranges = {Requirement(r).name.lower(): Requirement(r).specifier for r in project}
    pins = [Requirement(line.split()[1]) for line in (BENCH / "gpu-wheels.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]  # fmt: skip
    assert len({pin.name for pin in pins}) == len(pins)
    for pin in pins:
        (version,) = [spec.version for spec in pin.specifier if spec.operator == "=="]
        if pin.name.lower() in ranges:
            assert ranges[pin.name.lower()].contains(version), f"{pin} is outside pyproject.toml's range"
    assert {"nibabel", "jsonschema", "fpsample"} <= {pin.name for pin in pins}
    shell = subprocess.run(["bash", "-n", str(BENCH / "gpu-wheels.sh")], capture_output=True, text=True)
    assert shell.returncode == 0, shell.stderr


def test_gpu_script_smoke_runs_every_section_on_the_cpu(tmp_path, trained_run):
    """bash bench/gpu.sh --smoke: with only python3 on PATH (no snakemake; python3 the test's interpreter), every
    section on the CPU at tiny sizes, the GPU tests with the CPU standing in, the log streamed into $OUT; the
    trained test run scores the evaluation section's case (as the demo's run does on a GPU machine)."""
    out = tmp_path / "out"
    out.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # this environment's python
    (bin_dir / "python3").chmod(0o755)
    path = [str(bin_dir)] + [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "snakemake").exists()]
    env = dict(os.environ, OUT=str(out), PATH=os.pathsep.join(path), TRAINED_RUN=str(trained_run))
    done = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--smoke"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env=env)  # fmt: skip
    log = (out / "gpu-output.txt").read_text()
    assert done.returncode == 0, log[-5000:]
    assert log == done.stdout, "the log in $OUT is the whole output"
    for expected in (
        r"\d+ passed",  # tests/gpu, with the CPU standing in
        r"sample files: 2 in \S+",
        r"train step tiny batch 2 \(0 workers, uniform input\): .* the seed's",
        r"within 2 GiB: batch \d+ \(predicted",
        r"checkpoint save tiny \(\d+ M parameters\) to \S+: last.pt",
        r"production model at the real setting: [\d.]+ s per case",
        r"tiny on cpu \(2 cases\): encode",
        r"train step tiny batch 2 \(0 workers, uniform input, compile aot_eager\)",
        r"split of CPU \(self\) time by op family",
        r"train step tiny batch 2 \(\d+ workers, fps input\)",
    ):
        assert re.search(expected, log), f"no {expected!r} in the log"
    assert log.strip().splitlines()[-1].startswith("gpu.sh: every section ran in")
