"""The torchrun command line of a training job: one node standalone, several nodes through srun + c10d."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vecset.preemption import (
    ORPHAN_POLL_S,
    WORKFLOW_PROCESS_ENV,
    mark_workflow_process,
    process_identity,
    torchrun_environment,
    workflow_process,
)
from vecset.train.launch import Allocation, slurm_allocation, torchrun_command, training_environment

ARGS = ["--plan", "results/train/r/settings.json", "--state-dir", "results/train/r/state"]


def test_single_node_is_standalone_with_one_rank_per_gpu():
    cmd = torchrun_command(4, 1, ARGS, gpus_per_node=4, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone",
                   "-m", "vecset.train.run", *ARGS]  # fmt: skip


def test_multi_node_runs_one_agent_per_node_under_srun_with_rendezvous_on_the_first_node():
    allocation = Allocation(job_id="4242", nodes=("gpu07", "gpu08"), cpus_per_task="32")
    cmd = torchrun_command(4, 2, ARGS, gpus_per_node=4, allocation=allocation, python="py")
    srun, torchrun = cmd[: cmd.index("py")], cmd[cmd.index("py") :]
    assert srun == ["srun", "--ntasks=2", "--kill-on-bad-exit=1", "--cpus-per-task=32", "--gres=gpu:4"]
    assert "--standalone" not in torchrun
    assert {"--nnodes=2", "--nproc_per_node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu07:29400",
            "--rdzv-id=vecset-4242"} <= set(torchrun)  # fmt: skip
    assert torchrun[-len(ARGS) - 2 :] == ["-m", "vecset.train.run", *ARGS]


def test_a_lost_node_is_named_from_srun_s_report_and_the_controller_s_state():
    from vecset.train.launch import lost_nodes

    allocation = Allocation(job_id="7", nodes=("gpu07", "gpu08"))
    states = {"gpu07": "ALLOCATED", "gpu08": "DOWN+NOT_RESPONDING reason Not responding"}
    failure = "srun: error: gpu07: task 0: Exited with exit code 1\nsrun: error: Node failure on gpu08\n"
    assert lost_nodes(allocation, failure, states.get) == (
        "node gpu08 lost (srun reported a node failure, the controller: DOWN+NOT_RESPONDING reason Not responding)"
    )
    # srun's line alone (the controller not yet sure), or the controller's state alone, name the node too.
    assert lost_nodes(allocation, failure, lambda node: "ALLOCATED") == "node gpu08 lost (srun reported a node failure)"
    assert lost_nodes(allocation, "", states.get).startswith("node gpu08 lost (the controller: DOWN")
    # A rank that failed on a healthy node is no lost node.
    assert lost_nodes(allocation, "srun: error: gpu07: task 0: Exited with exit code 1\n", lambda node: "MIXED") == ""


def test_scontrol_records_keep_values_with_spaces_and_equals_signs():
    from vecset.train.launch import parse_scontrol

    job = parse_scontrol(
        "JobId=16 JobName=train Reason=None Dependency=(null) NodeList=vn[1-2] BatchHost=vn1 CPUs/Task=1 "
        "TRES=cpu=2,mem=1G,node=2\n"
    )
    assert (job["Reason"], job["NodeList"], job["CPUs/Task"], job["TRES"]) == (
        "None",
        "vn[1-2]",
        "1",
        "cpu=2,mem=1G,node=2",
    )
    node = parse_scontrol("NodeName=vn2 State=DOWN+NOT_RESPONDING Reason=Not responding [slurm@2026-12-06T11:00:00]\n")
    assert (node["State"], node["Reason"]) == ("DOWN+NOT_RESPONDING", "Not responding [slurm@2026-12-06T11:00:00]")


def test_multi_node_outside_slurm_names_the_fix():
    with pytest.raises(RuntimeError, match=r"SLURM_JOB_ID is not set.*nodes: 1"):
        slurm_allocation({})
    with pytest.raises(ValueError, match="needs the SLURM allocation"):
        torchrun_command(1, 2, ARGS)
    with pytest.raises(ValueError, match="at least one rank"):
        torchrun_command(0, 1, ARGS)


def test_gpu_job_environment_waits_out_the_save_and_grows_cuda_segments():
    from vecset.config import resolve_runs, validate_config
    from vecset.plan import make_plan

    from conftest import DEFAULT_LABELS

    runs = {"gpu": {"resources": {"gpus": 4, "cpus_per_rank": 8, "signal_margin_s": 600}}, "cpu": {}}
    plans = {
        n: make_plan(r, 0, list(DEFAULT_LABELS), 8, 2) for n, r in resolve_runs(validate_config({"runs": runs})).items()
    }
    gpu = training_environment(plans["gpu"], {"PATH": "/bin"})
    assert gpu["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True" and gpu["OMP_NUM_THREADS"] == "2"
    assert gpu["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "570", "torchrun waits all of the margin but 30 s for the save"
    cpu = training_environment(plans["cpu"], {"OMP_NUM_THREADS": "7"})
    assert "PYTORCH_CUDA_ALLOC_CONF" not in cpu and cpu["OMP_NUM_THREADS"] == "7", "a user's value wins"
    assert cpu["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "270"


@pytest.mark.workflow
def test_torchrun_is_told_to_forward_sigusr1_to_its_ranks(tmp_path):
    """torchrun overwrites TORCHELASTIC_SIGNALS_TO_HANDLE from its own option; the environment must reach it."""
    script = tmp_path / "show.py"
    script.write_text("import os\nprint('forwarded:', os.environ['TORCHELASTIC_SIGNALS_TO_HANDLE'])\n")
    env = dict(torchrun_environment(dict(os.environ)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script)]
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "SIGUSR1" in shown.stdout.split("forwarded:")[1].strip().split(","), shown.stdout


def test_a_train_job_that_cannot_start_says_why_in_its_log(tmp_path):
    from vecset.train.launch import run_training_job

    plan = tmp_path / "settings.json"
    plan.write_text('{"format": 0}')
    log = tmp_path / "train.log"
    status = run_training_job(plan, "train.csv", "val.csv", tmp_path / "state", tmp_path, log)
    assert status == 1
    lines = log.read_text().strip().splitlines()
    assert "Traceback" in lines[0] and lines[-1].startswith(f"error: train job of {plan}: ValueError: {plan}: not")


CHILD = """
import signal, sys, time
from pathlib import Path
def stop(*_):
    Path("stopped").write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
Path("ready").write_text("yes")
time.sleep(120)
"""
SUPERVISOR = f"""
import subprocess, sys
from vecset.preemption import stop_child_when_orphaned
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}])
stop_child_when_orphaned(child)
sys.exit(child.wait())
"""
WORKFLOW = f"""
import subprocess, sys
from vecset.preemption import mark_workflow_process
mark_workflow_process()  # as parsing the Snakefile does
subprocess.run(["bash", "-c", "exec " + sys.executable + " -c " + __import__("shlex").quote({SUPERVISOR!r})])
"""


@pytest.mark.workflow
def test_a_training_job_outlives_the_shell_that_started_snakemake_but_not_snakemake(tmp_path):
    """``nohup snakemake … &`` from a shell that exits: the job's supervisor watches the workflow process it
    was told of, not its grandparent, so training goes on; killing that process stops the trainer."""
    script = f'{sys.executable} -c "$WORKFLOW" & echo $! > workflow.pid; while [ ! -s ready ]; do sleep 0.1; done'
    shell = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=dict(os.environ, WORKFLOW=WORKFLOW))
    assert shell.wait(timeout=60) == 0
    workflow = int((tmp_path / "workflow.pid").read_text())
    time.sleep(3 * ORPHAN_POLL_S)
    assert not (tmp_path / "stopped").exists(), "the trainer stopped though its workflow process lives"
    os.kill(workflow, signal.SIGKILL)
    deadline = time.time() + 10 * ORPHAN_POLL_S
    while not (tmp_path / "stopped").exists():
        assert time.time() < deadline, "the trainer outlived its workflow process"
        time.sleep(0.2)


def test_a_workflow_process_named_by_an_earlier_workflow_is_not_watched():
    """sbatch exports the submitting Snakemake's value; only an ancestor that is still the same process counts."""
    parent = process_identity(os.getppid())
    assert parent is not None and workflow_process({WORKFLOW_PROCESS_ENV: parent}) == parent
    assert workflow_process({WORKFLOW_PROCESS_ENV: f"{os.getppid()}:1"}) is None, "a reused PID is not it"
    assert workflow_process({WORKFLOW_PROCESS_ENV: "1:0"}) is None and workflow_process({}) is None
    env: dict[str, str] = {}
    mark_workflow_process(env)
    assert env[WORKFLOW_PROCESS_ENV] == process_identity(os.getpid())
    assert workflow_process(env) is None, "a process is not its own ancestor"


def test_ranks_are_listed_by_host_in_runs_of_consecutive_ranks():
    from vecset.train.distributed import ranks_by_host

    assert ranks_by_host(["vn1", "vn1", "vn2", "vn2"]) == "vn1: ranks 0-1; vn2: ranks 2-3"
    assert ranks_by_host(["a", "b", "a"]) == "a: rank 0; b: rank 1; a: rank 2"
    assert ranks_by_host(["vn1", "vn1", "vn2", "vn2"], only={0, 2, 3}) == "vn1: rank 0; vn2: ranks 2-3"


def test_a_stop_names_the_signals_and_the_ranks_they_reached_by_host():
    import torch

    from vecset.train.distributed import Ranks
    from vecset.train.trainer import signals_reached

    ranks = Ranks(rank=0, world=3, nodes=2, device=torch.device("cpu"), hosts=("vn1", "vn1", "vn2"))
    received = [("SIGUSR1",), (), ("SIGTERM", "SIGUSR1")]
    assert signals_reached(received, ranks) == "SIGTERM/SIGUSR1 reached vn1: rank 0; vn2: rank 2; not vn1: rank 1"
    assert signals_reached([("SIGUSR1",)] * 3, ranks) == "SIGUSR1 reached vn1: ranks 0-1; vn2: rank 2"
