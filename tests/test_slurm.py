"""The workflow through `--profile profiles/slurm` on a real single-node SLURM cluster (slurmctld + slurmd).

tests/slurm/start_cluster.sh installs Debian's slurm-wlm and munge and starts the cluster; without root it
cannot, and these tests skip saying so. The overrides are the test cluster's: no accounting database
(status by squeue, no account), a short first status check.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchlib import path_without_slurm
from conftest import REPO
from workflow_helpers import FAST_TRAIN, snakemake, snakemake_command, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]
TEST_CLUSTER = (
    "--profile", str(REPO / "profiles/slurm"),
    "--slurm-status-command", "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "3",
    "--slurm-keep-successful-logs",
    "--latency-wait", "5",
)  # fmt: skip
DEMO = {"demo": {"n_cases": 3}}


def slurm_jobs() -> dict[str, list[str]]:
    """Every job the controller still knows (MinJobAge is a day): comment (rule_…/group_…) → job ids."""
    out = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i|%k"], capture_output=True, text=True, check=True
    ).stdout
    jobs: dict[str, list[str]] = {}
    for line in out.splitlines():
        job_id, comment = line.split("|", 1)
        jobs.setdefault(comment, []).append(job_id)
    return jobs


def _new_jobs(before: dict[str, list[str]]) -> dict[str, list[str]]:
    after = slurm_jobs()
    return {k: sorted(set(v) - set(before.get(k, []))) for k, v in after.items() if set(v) - set(before.get(k, []))}


def _run_interval(benchmark: Path) -> tuple[float, float]:
    """(start, end) of a job from its benchmark file: the end is the file's birth time (Snakemake re-stamps outputs'
    modification times after a SLURM job ends, so mtimes look falsely overlapped), the start that minus its ``s``."""
    end = float(subprocess.run(["stat", "-c", "%W", str(benchmark)], capture_output=True, text=True).stdout)
    assert end > 0, f"{benchmark}: the file system records no birth time"
    seconds = float(benchmark.read_text().splitlines()[1].split("\t")[0])
    return end - seconds, end


def test_demo_workflow_end_to_end_through_slurm(slurm_cluster, tmp_path):
    cases = 4
    write_config(tmp_path, demo={"n_cases": cases})
    before = slurm_jobs()
    snakemake(tmp_path, *TEST_CLUSTER, timeout=900)
    submitted = _new_jobs(before)
    # Per-case jobs went as array tasks (<array id>_<task>), in fewer sbatch calls than jobs, one task per case.
    for rule in ("demo_case", "mesh", "sample"):
        ids = [j for k, v in submitted.items() if k.startswith(f"rule_{rule}") for j in v]
        assert len(ids) == cases, (rule, submitted)
        assert len({j.split("_")[0] for j in ids}) < cases, f"{rule}: no array of several tasks: {ids}"
    # Every demo case was ready at once: one array, whose tasks ran side by side.
    (demo_array,) = {j.split("_")[0] for k, v in submitted.items() if k.startswith("rule_demo_case") for j in v}
    runs = [_run_interval(p) for p in sorted((tmp_path / "results/benchmarks/demo_case").glob("*.tsv"))]
    overlapping = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, f"array {demo_array}: its {cases} tasks ran one after another: {runs}"
    for rule in ("split", "oracle", "train", "evaluate", "plots", "encode"):
        assert any(k.startswith(f"rule_{rule}") for k in submitted), f"rule {rule} not submitted: {sorted(submitted)}"
    assert not any("group" in k for k in submitted), submitted
    # The SLURM logs name the job ids, and the jobs ran to completion.
    logs = list((tmp_path / ".snakemake/slurm_logs").rglob("*.log"))
    assert {p.stem for p in logs} >= {j for ids in submitted.values() for j in ids}
    train_log = (tmp_path / "results/logs/train/demo.log").read_text()
    assert re.search(r"SLURM job \d+ on ", train_log) and "world size 1: 1 node(s)" in train_log
    best = torch.load(tmp_path / "results/train/demo/checkpoint-best.pt", weights_only=True)
    assert best["step"] >= 1
    assert (tmp_path / "results/eval/demo/summary.csv").exists()
    assert len(list((tmp_path / "results/samples").glob("demo_*.npz"))) == cases


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _running_train_job() -> str | None:
    out = subprocess.run(
        ["squeue", "-h", "--states=RUNNING", "-o", "%i|%k"], capture_output=True, text=True, check=True
    ).stdout
    ids = [line.split("|")[0] for line in out.splitlines() if line.split("|", 1)[1].startswith("rule_train")]
    return ids[0] if ids else None


def _epochs_logged(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    return len([line for line in metrics.read_text().splitlines() if line.strip()])


def test_training_signalled_by_slurm_saves_is_retried_and_resumes(slurm_cluster, tmp_path):
    """SIGUSR1 through SLURM (what --signal=USR1@T sends before the time limit) stops the train job after a
    save; the profile's retries resubmit it, and the new SLURM job resumes from the saved state."""
    epochs = 2500  # one step each, about a minute in all: long enough to be signalled mid-run
    train = {**FAST_TRAIN, "epochs": epochs, "val_every_steps": 500}
    write_config(tmp_path, **DEMO, train=train)
    snakemake(tmp_path, *TEST_CLUSTER, "--until", "split", timeout=600)
    before = slurm_jobs()
    proc = subprocess.Popen(  # training only: evaluation is another test's
        snakemake_command(tmp_path, *TEST_CLUSTER, "--", "results/train/demo/checkpoint-last.pt"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        job = _wait_for(_running_train_job, 300, "the train job to run")
        metrics = tmp_path / "results/train/demo/state/metrics.jsonl"
        _wait_for(lambda: _epochs_logged(metrics) >= 20, 300, "20 training epochs")
        subprocess.run(["scancel", "--signal=USR1", job], check=True)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    train_jobs = [j for k, ids in _new_jobs(before).items() if k.startswith("rule_train") for j in ids]
    assert len(train_jobs) == 2 and job in train_jobs, f"expected the signalled job and one retry, got {train_jobs}"
    # The job log holds the last attempt; the run's message history keeps both.
    log = (tmp_path / "results/train/demo/state/messages.log").read_text()
    # SLURM signals every process of the step: the rank gets SIGUSR1, and maybe SIGTERM from its supervisor (through
    # torchrun) before it stops.
    stop = rf"stop requested \((SIGTERM/)?SIGUSR1 reached {re.escape(socket.gethostname())}: rank 0\): saved"
    assert re.search(stop, log), log[-2000:]
    resumed = re.search(r"resumed from \S+: epoch (\d+)", log)
    assert resumed and 20 <= int(resumed.group(1)) < epochs, log[-2000:]
    final = torch.load(tmp_path / "results/train/demo/checkpoint-last.pt", weights_only=True)
    assert final["epoch"] == epochs
    records = [json.loads(line) for line in (tmp_path / "results/train/demo/metrics.jsonl").read_text().splitlines()]
    assert sorted({r["epoch"] for r in records}) == list(range(1, epochs + 1))


def test_profile_dry_run_needs_no_slurm_tools(tmp_path):
    """A login node without SLURM: `snakemake --profile profiles/slurm -n` still plans every job."""
    write_config(tmp_path, **DEMO)
    env = {**os.environ, "PATH": path_without_slurm(tmp_path / "bin")}
    proc = subprocess.run(snakemake_command(tmp_path, "--profile", str(REPO / "profiles/slurm"), "-n"),
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^sample\s+3$", proc.stdout, flags=re.MULTILINE) and "This was a dry-run" in proc.stdout
    # A CPU run evaluates asking for no GPU (and the 16 GB a real-size case needs).
    (job,) = re.findall(r"^rule evaluate:\n(.*?)(?:\n\n|\Z)", proc.stdout, flags=re.MULTILINE | re.DOTALL)
    assert "gpu=0" in job and "mem_mb=16000" in job, job


def test_production_run_plans_its_gpu_job_through_the_profile(tmp_path):
    """config/imagecas.yaml over config.yaml through the SLURM profile (dry run, no SLURM tools): only the
    imagecas run trains, as one 4-GPU job with its CPUs, memory, 36 h and the save signal 10 min ahead."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(5):  # a dry run only lists the label maps
        (inputs / f"case_{i:04d}.nii.gz").write_bytes(b"")
    env = {**os.environ, "PATH": path_without_slurm(tmp_path / "bin")}
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(REPO / "config/config.yaml"), str(REPO / "config/imagecas.yaml"),
        "--config", f"input_dir={inputs}", "--profile", str(REPO / "profiles/slurm"), "-n",
        "--cores", "1000",  # a dry run caps threads at --cores (1 by default); a submitting run does not
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = re.findall(r"^rule train:\n(.*?)(?:\n\n|\Z)", proc.stdout, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1 and "wildcards: run=imagecas" in blocks[0], "only the imagecas run trains"
    train = blocks[0]
    assert re.search(r"^\s+threads: 32$", train, flags=re.MULTILINE), train  # 4 ranks × 8 CPUs
    resources = re.search(r"resources: (.*)", train).group(1)
    for expected in ("gpu=4", "mem_mb=128000", "runtime=2160", "slurm_extra=--signal=USR1@600 --no-requeue"):
        assert expected in resources, resources
    # Evaluation and encoding take one of the run's GPUs with its 8 CPUs and a quarter of the node's memory.
    for rule, runtime in (("evaluate", 240), ("encode", 120)):
        (job,) = re.findall(rf"^rule {rule}:\n(.*?)(?:\n\n|\Z)", proc.stdout, flags=re.MULTILINE | re.DOTALL)
        assert re.search(r"^\s+threads: 8$", job, flags=re.MULTILINE), job
        resources = re.search(r"resources: (.*)", job).group(1)
        for expected in ("gpu=1", "mem_mb=32000", f"runtime={runtime}"):
            assert expected in resources, (rule, resources)


@pytest.mark.skipif(os.geteuid() != 0, reason="the cluster script starts daemons as root")
def test_the_cluster_script_never_stops_a_slurm_daemon_it_did_not_start(tmp_path):
    """On a shared machine a slurmctld the script did not start is someone else's: with the node not idle, the
    script leaves it running (and its config unwritten) and says so, instead of stopping every slurmctld."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "sinfo").write_text("#!/bin/sh\necho down\n")  # the node does not answer as idle
    (stubs / "sinfo").chmod(0o755)
    foreign = stubs / "slurmctld"  # a process named slurmctld that this script did not start
    foreign.write_bytes(Path("/bin/sleep").read_bytes())
    foreign.chmod(0o755)
    other = subprocess.Popen([str(foreign), "300"])
    try:
        env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", VECSET_SLURM_PIDS=str(tmp_path / "ours"))
        config = Path("/etc/slurm/slurm.conf")
        before = config.read_bytes() if config.exists() else None
        done = subprocess.run(["bash", str(REPO / "tests/slurm/start_cluster.sh")], env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 3, done.stdout + done.stderr
        assert "a slurmctld this script did not start is running (PID" in done.stderr and str(other.pid) in done.stderr
        assert other.poll() is None, "the other slurmctld was stopped"
        assert (config.read_bytes() if config.exists() else None) == before, "its config was rewritten"
    finally:
        other.kill()
        other.wait()
