"""One training job: the torchrun command of its ranks, and the supervisor process that runs it.

Single node: ``torchrun --standalone --nproc_per_node=R``. Several nodes: the job runs ``srun`` with one
task per node, each task starts one torchrun agent, and the agents meet through a c10d rendezvous hosted on
the job's first node, keyed by the SLURM job id (so a requeued or retried job starts a fresh rendezvous).
:func:`run_training_job` starts that command, logs what it starts, and passes stop signals on
(vecset.preemption).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vecset.errors import describe_failure
from vecset.plan import RunPlan
from vecset.preemption import PREEMPTED_EXIT, forward_stop_signals, stop_child_when_orphaned, torchrun_environment
from vecset.train.run_log import append_history

RDZV_PORT = 29400


def node_names(nodelist: str) -> tuple[str, ...]:
    """The host names of a SLURM node list (``node[03-05,07]`` → node03, node04, node05, node07), via ``scontrol``."""
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    ).stdout.split()
    if not out:
        raise RuntimeError(f"scontrol show hostnames {nodelist!r} printed no host")
    return tuple(out)


def scontrol_fields(entity: str, name: str, timeout: float | None = None) -> dict[str, str]:
    """``scontrol show <entity> --oneliner <name>`` as a dict (a job's NodeList, CPUs/Task; a node's State, ...)."""
    out = subprocess.run(
        ["scontrol", "show", entity, "--oneliner", name], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout
    return parse_scontrol(out)


# A value runs until the next ``Key=``: a node's ``Reason=Not responding [slurm@...]`` holds spaces.
_SCONTROL_FIELD = re.compile(r"(\S+?)=(.*?)(?=\s+\S+?=|\s*$)", re.DOTALL)


def parse_scontrol(text: str) -> dict[str, str]:
    """``Key=value`` pairs of one ``scontrol --oneliner`` record; values may hold spaces and ``=``."""
    return dict(_SCONTROL_FIELD.findall(text.strip()))


def address_of(host: str) -> str:
    """``host``'s IPv4 address as this machine resolves it, or a note that it does not resolve."""
    try:
        return socket.gethostbyname(host)
    except OSError as err:
        return f"does not resolve here: {err}"


@dataclass(frozen=True)
class Allocation:
    """Where a multi-node job runs: its SLURM job id, nodes (the first: the rendezvous host) and CPUs per task."""

    job_id: str
    nodes: tuple[str, ...]
    cpus_per_task: str | None = None

    @property
    def head(self) -> str:
        return self.nodes[0]


def slurm_allocation(env: Mapping[str, str] | None = None) -> Allocation:
    """The current SLURM job's allocation. The executor plugin's job step keeps SLURM_JOB_ID but drops most
    other SLURM_* variables, so the node list and CPUs per task are asked of ``scontrol``."""
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env:
        raise RuntimeError(
            "multi-node training runs inside a SLURM job, but SLURM_JOB_ID is not set; "
            "submit with --profile profiles/slurm, or set train.resources.nodes: 1"
        )
    fields = scontrol_fields("job", env["SLURM_JOB_ID"])
    return Allocation(env["SLURM_JOB_ID"], node_names(fields["NodeList"]), fields.get("CPUs/Task"))


def torchrun_command(
    ranks_per_node: int,
    nodes: int,
    trainer_args: list[str],
    gpus_per_node: int = 0,
    allocation: Allocation | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv that starts ``vecset.train.run`` on ``nodes`` × ``ranks_per_node`` ranks.

    With ``nodes > 1`` it runs inside ``allocation`` (``nodes`` tasks, one per node): the rendezvous host is
    its first node and the rendezvous id its job id. The srun step asks for the job's CPUs per task and GPUs
    per node explicitly, because srun no longer inherits them.
    """
    if ranks_per_node < 1 or nodes < 1:
        raise ValueError(f"need at least one rank and one node, got {ranks_per_node} ranks × {nodes} nodes")
    torchrun = [python, "-m", "torch.distributed.run", f"--nproc_per_node={ranks_per_node}"]
    trainer = ["-m", "vecset.train.run", *trainer_args]
    if nodes == 1:
        return [*torchrun, "--standalone", *trainer]
    if allocation is None:
        raise ValueError(f"multi-node training ({nodes} nodes) needs the SLURM allocation it runs in")
    rendezvous = [
        f"--nnodes={nodes}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={allocation.head}:{RDZV_PORT}",
        f"--rdzv-id=vecset-{allocation.job_id}",
    ]
    srun = ["srun", f"--ntasks={nodes}", "--kill-on-bad-exit=1"]
    if allocation.cpus_per_task:
        srun.append(f"--cpus-per-task={allocation.cpus_per_task}")
    if gpus_per_node:
        srun.append(f"--gres=gpu:{gpus_per_node}")
    return [*srun, *torchrun, *rendezvous, *trainer]


def training_environment(plan: RunPlan, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a run's torchrun: the stop-signal policy (vecset.preemption), the ranks' threads and,
    on GPUs, an allocator that grows segments instead of fragmenting (variable-size batches: an epoch's short
    last one, the eikonal stencil). A user's values win."""
    resources = plan.train.resources
    env = dict(torchrun_environment(dict(base), resources.signal_margin_s))
    env.setdefault("OMP_NUM_THREADS", str(plan.train.torch_threads(gpu=resources.gpus > 0)))
    if resources.gpus:
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    return env


def run_training_job(
    plan_path: str | Path, train_csv: str | Path, val_csv: str | Path, state_dir: str | Path, out_dir: str | Path,
    log_path: str | Path,
) -> int:  # fmt: skip
    """Run the plan's training under torchrun on this job's nodes, its output appended to ``log_path``; the
    exit status of torchrun (0 done, vecset.preemption.PREEMPTED_EXIT stopped and saved), or 1 when the job
    cannot start, with the traceback and a plain line (vecset.errors.describe_failure) in the log."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        try:
            plan = RunPlan.read(plan_path)
            trainer_args = [
                "--plan", str(plan_path), "--train-csv", str(train_csv), "--val-csv", str(val_csv),
                "--state-dir", str(state_dir), "--out-dir", str(out_dir),
            ]  # fmt: skip
            return supervise(plan, trainer_args, log, Path(state_dir))
        except Exception as err:
            traceback.print_exc(file=log)
            print(f"error: train job of {plan_path}: {describe_failure(err, state_dir)}", file=log, flush=True)
            return 1


def supervise(plan: RunPlan, trainer_args: list[str], log: TextIO, state_dir: Path) -> int:
    """Start torchrun for ``plan`` with its output in ``log``, pass stop signals on, stop it when the workflow
    process above this one is gone; torchrun's exit status."""
    resources = plan.train.resources
    env = training_environment(plan, os.environ)
    allocation = slurm_allocation(env) if resources.nodes > 1 else None
    command = torchrun_command(resources.ranks_per_node, resources.nodes, trainer_args, resources.gpus, allocation)
    job = env.get("SLURM_JOB_ID")
    where = f", SLURM job {job} on {socket.gethostname()}" if job else ""
    print(f"train {plan.run}: {resources.nodes} node(s) × {resources.ranks_per_node} rank(s){where}", file=log)
    if allocation is not None:
        print(f"rendezvous on {allocation.head} ({address_of(allocation.head)}), port {RDZV_PORT}", file=log)
    log.flush()
    if resources.gpus and shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "-L"], stdout=log, stderr=subprocess.STDOUT, check=False)
    print(" ".join(command), file=log, flush=True)
    started = log.tell()
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    forward_stop_signals(child)

    def orphaned() -> None:
        print("the workflow process that ran this job is gone: stopping the trainer (it saves first)", file=log)
        log.flush()

    stop_child_when_orphaned(child, orphaned)
    status = child.wait()
    if allocation is not None and status not in (0, PREEMPTED_EXIT):
        report_lost_nodes(plan, allocation, output_since(Path(log.name), started), state_dir, log)
    return status


def output_since(path: Path, offset: int) -> str:
    """What ``path`` holds past byte ``offset`` (a job step's output, not the whole log of a 36 h run)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def report_lost_nodes(plan: RunPlan, allocation: Allocation, output: str, state_dir: Path, log: TextIO) -> None:
    """One line in the job's log and the run's message history (which outlives a requeue) when a node was lost."""
    lost = lost_nodes(allocation, output)
    if lost:
        line = (
            f"error: train {plan.run}, SLURM job {allocation.job_id}: {lost}; the ranks on the other nodes stopped, "
            f"and the profile's retry resumes from the last save in {state_dir} on the nodes it gets"
        )
        print(line, file=log, flush=True)
        append_history(state_dir, line)


NODE_FAILURE = re.compile(r"srun: error: Node failure on (\S+)")
LOST_STATES = ("DOWN", "NOT_RESPONDING", "FAIL", "NO_RESPOND")


def lost_nodes(allocation: Allocation, output: str, state_of: Callable[[str], str] | None = None) -> str:
    """Which of the allocation's nodes were lost, and how it shows, on one line (empty when none was): srun's
    "Node failure on" lines in the job step's ``output``, and nodes whose state (``state_of``, default
    :func:`node_state`) says the controller no longer hears from them."""
    failed = set(NODE_FAILURE.findall(output))
    states = {node: (state_of or node_state)(node) for node in allocation.nodes}
    gone = {node for node, state in states.items() if any(s in state for s in LOST_STATES)}
    lines = []
    for node in sorted(failed | gone):
        why = ["srun reported a node failure"] if node in failed else []
        why += [f"the controller: {states[node]}"] if node in gone else []
        lines.append(f"node {node} lost ({', '.join(why)})")
    return "; ".join(lines)


def node_state(node: str) -> str:
    """``State=`` and ``Reason=`` of a node as the controller sees it ('' when it cannot be asked)."""
    try:
        fields = scontrol_fields("node", node, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    reason = fields.get("Reason", "")
    return " ".join(filter(None, [fields.get("State", ""), f"reason {reason}" if reason else ""]))
