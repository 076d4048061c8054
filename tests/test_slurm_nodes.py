"""Training across two SLURM nodes for real: nodes vn1 and vn2, each a slurmd in its own network namespace with its
own host name and address (tests/slurm/two_nodes.sh), the workflow through `--profile profiles/slurm`.

The tests share one working directory (the module's): the per-case jobs run once, as job arrays over both nodes,
and each test trains its own run on the same samples. CPU ranks, gloo, the tiny model.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_slurm import TEST_CLUSTER, _wait_for

from conftest import REPO
from workflow_helpers import FAST_TRAIN, snakemake, snakemake_command, write_config

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

CASES = 4
TWO_NODES = {"nodes": 2, "cpu_ranks": 1, "cpus_per_rank": 1}
# SIGUSR1 110 s before the time limit. The test shortens the first attempt's limit to 2 minutes once it trains
# (scontrol update), so that attempt gets the signal at slurmctld's next time-limit check (every 30 s) while the
# retry, at 10 minutes, does not: one signal, whatever the machine's speed.
TIME_LIMITED = {**TWO_NODES, "runtime": 10, "signal_margin_s": 110}
ONE_NODE = {"nodes": 1, "cpu_ranks": 2, "cpus_per_rank": 1}  # the same world size on one host
TRAIN = {**FAST_TRAIN, "epochs": 1800, "val_every_steps": 600}  # one step an epoch: 45 s on an idle machine
LOSS_TOLERANCE = 1e-5  # relative: the same ranks, seed and data order; gloo's sum of two terms is exact
RUNS = {
    "mn": {"resources": TIME_LIMITED},
    "one": {"resources": ONE_NODE},
    # Saves every 3 s, so a lost node costs a few seconds of steps.
    "lost": {"resources": TWO_NODES, "checkpoint_minutes": 0.05, "epochs": 600, "val_every_steps": 200},
}


@pytest.fixture(scope="module")
def workdir(two_node_cluster, tmp_path_factory) -> Path:
    """A working directory whose cases were meshed and sampled through the two-node cluster."""
    path = tmp_path_factory.mktemp("two_nodes")
    write_config(path, demo={"n_cases": CASES}, train=TRAIN, runs=RUNS)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", two_node_cluster)
        snakemake(path, *TEST_CLUSTER, "--until", "split", timeout=900)
    return path


@pytest.fixture
def on_two_nodes(two_node_cluster, monkeypatch):
    """SLURM clients (sbatch, squeue, scontrol) of this test talk to the two-node cluster."""
    monkeypatch.setenv("SLURM_CONF", two_node_cluster)


def node_address(node: str) -> str:
    return (
        subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True, check=True)
        .stdout.split("NodeAddr=", 1)[1]
        .split()[0]
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def metrics_of(state: Path) -> list[str]:
    """The lines of a running run's metrics log (its state folder's)."""
    path = state / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def test_per_case_array_tasks_ran_on_both_nodes(workdir):
    """Each array task's SLURM log names the host it ran on (the `Host:` line of Snakemake's header)."""
    hosts: dict[str, set[str]] = {}
    for log in (workdir / ".snakemake/slurm_logs").rglob("*.log"):
        rule = log.relative_to(workdir / ".snakemake/slurm_logs").parts[0]
        found = re.search(r"^\s*Host: (\S+)$", log.read_text(), flags=re.MULTILINE)
        assert found, f"{log}: no host line"
        hosts.setdefault(rule, set()).add(found.group(1))
    per_case = {rule: h for rule, h in hosts.items() if rule in ("rule_demo_case", "rule_mesh", "rule_sample")}
    assert len(per_case) == 3 and all(h == {"vn1", "vn2"} for h in per_case.values()), hosts


def test_a_run_spans_both_nodes_survives_its_time_limit_and_matches_one_node(workdir, on_two_nodes):
    """Ranks on vn1 and vn2 meet at vn1's address; SIGUSR1 ahead of the time limit reaches both, every rank stops
    after rank 0's save, the profile's retry resumes, and the run's losses equal an unbroken one-node run's."""
    state = workdir / "results/train/mn/state"
    with training(workdir, "mn") as (proc, job):
        _wait_for(lambda: len(metrics_of(state)) >= 50, 300, "50 steps")
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=2"], check=True)
        out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-5000:]
    log = (workdir / "results/logs/train/mn.log").read_text()  # the last attempt's
    endpoint = re.search(r"--rdzv-endpoint=(\S+):(\d+)", log)
    assert endpoint and endpoint.group(1) == "vn1", log[-3000:]
    assert "srun --ntasks=2 " in log and " --nnodes=2 " in log and " --rdzv-backend=c10d " in log, log[-3000:]
    assert f"rendezvous on vn1 ({node_address('vn1')}), port {endpoint.group(2)}" in log, log[-3000:]
    assert "world size 2: 2 node(s) × 1 rank(s) on cpu (vn1: rank 0; vn2: rank 1)" in log, log[-3000:]
    history = (workdir / "results/train/mn/state/messages.log").read_text()
    stops = re.findall(r"stop requested \((.*?)\): saved \S+ at epoch \d+, step (\d+)", history)
    assert len(stops) == 1, history[-3000:]
    assert all(reached == "SIGUSR1 reached vn1: rank 0; vn2: rank 1" for reached, _ in stops), stops
    resumed = [int(step) for step in re.findall(r"resumed from \S+: epoch \d+, step (\d+)", history)]
    assert resumed == [int(step) for _, step in stops], history[-3000:]
    records = metrics(workdir / "results/train/mn")
    assert [r["step"] for r in records] == list(range(1, TRAIN["epochs"] + 1)), "a step logged twice or missing"

    # The same world size on one host, unbroken (no SLURM: torchrun --standalone), same seed and data order.
    snakemake(workdir, "--cores", "2", "--", "results/train/one/checkpoint-best.pt", timeout=900)
    reference = metrics(workdir / "results/train/one")
    for a, b in zip(records, reference, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) <= LOSS_TOLERANCE * abs(b["train_loss"]), (a, b)


def job_state(job: str) -> str:
    out = subprocess.run(["squeue", "--states=all", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def train_job(run: str) -> str | None:
    """The id of the run's train job that is running now, if any."""
    out = subprocess.run(
        ["squeue", "-h", "--states=RUNNING", "-o", "%i|%k"], capture_output=True, text=True, check=True
    ).stdout
    ids = [line.split("|")[0] for line in out.splitlines() if line.endswith(f"|rule_train_multinode_wildcards_{run}")]
    return ids[0] if ids else None


def cluster(*args: str) -> None:
    subprocess.run(["bash", str(REPO / "tests/slurm/two_nodes.sh"), *args], check=True, capture_output=True)


@contextlib.contextmanager
def training(workdir: Path, run: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """The workflow through the profile, training ``run`` in the background: (its process, the running train job's
    id) once the job runs; the process is killed on the way out if it is still running."""
    proc = subprocess.Popen(
        snakemake_command(workdir, *TEST_CLUSTER, "--", f"results/train/{run}/checkpoint-best.pt"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        yield proc, _wait_for(lambda: train_job(run), 300, "the train job to run")
    finally:
        if proc.poll() is None:
            proc.kill()


LOST_NODE_BOUND_S = 120  # from the kill to the job's end: no rank may wait on a collective with a dead peer


def test_a_lost_node_ends_the_job_with_one_line_and_the_retry_resumes(workdir, on_two_nodes):
    """vn2 dies mid-run (its slurmd, job step, agent and rank killed at once): the job ends within a bound, its log
    names the node and the reason in one line, and the profile's retry (a new job: train jobs are not requeued by
    SLURM) resumes from the last save once vn2 is back."""
    state = workdir / "results/train/lost/state"
    try:
        with training(workdir, "lost") as (proc, job):
            _wait_for(lambda: (state / "last.pt").exists() and len(metrics_of(state)) >= 100, 300, "a save, 100 steps")
            cluster("kill-node", "vn2")
            killed = time.monotonic()
            _wait_for(lambda: job_state(job) not in ("RUNNING", "COMPLETING"), LOST_NODE_BOUND_S, "the job to end")
            ended_s = time.monotonic() - killed
            cluster("start-node", "vn2")
            out, _ = proc.communicate(timeout=900)
    finally:
        cluster("start-node", "vn2")  # whatever failed, the next test gets both nodes
    assert proc.returncode == 0, out[-5000:]
    # The failed attempt's job log is replaced by the retry's; the run's message history keeps its line.
    history = (state / "messages.log").read_text()
    errors = [line for line in history.splitlines() if "error: train lost" in line]
    assert len(errors) == 1 and f"SLURM job {job}: node vn2 lost (" in errors[0], history[-3000:]
    print(f"job ended {ended_s:.0f} s after the node was killed: {errors[0]}")
    resumed = re.findall(r"resumed from \S+: epoch \d+, step (\d+)", history)
    assert len(resumed) == 1 and int(resumed[0]) >= 1, history[-3000:]
    assert train_job("lost") is None and job_state(job) == "NODE_FAIL", job_state(job)
    records = metrics(workdir / "results/train/lost")
    assert [r["step"] for r in records] == list(range(1, RUNS["lost"]["epochs"] + 1)), "a step twice or missing"
