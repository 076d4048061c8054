"""How a training run stops early and resumes: the whole policy, in one place.

SLURM asks a job to stop in two ways: ``--signal=USR1@T`` (train.resources.signal_margin_s) sends SIGUSR1 T
seconds before the time limit, and preemption or ``scancel`` send SIGTERM. SLURM signals every process of
the job step, so each layer has a part:

1. The Snakemake process that runs the job ignores SIGUSR1 (:func:`ignore_stop_signal_in_workflow`, called
   when the Snakefile is parsed); SIGUSR1's default action would kill it and end the job step at once.
2. The job's supervisor (``vecset.train.launch.run_training_job``) passes every stop signal on to torchrun as
   SIGTERM (:func:`forward_stop_signals`).
3. torchrun passes :data:`SIGNALS_TO_HANDLE` on to its ranks and waits for them before killing them: all of
   the signal margin but the last :data:`EXIT_RESERVE_S` seconds, at least :data:`SHUTDOWN_TIMEOUT_S`
   (:func:`torchrun_environment`), since the save of a 7 GB state can take minutes on a busy file system.
4. Every rank records the request (:class:`StopRequest`); at the next optimizer step the ranks agree on it,
   rank 0 saves ``state/last.pt`` while the others wait at a barrier, and every rank exits with
   :data:`PREEMPTED_EXIT`.
   DataLoader workers ignore stop signals (:func:`ignore_stop_signals_in_loader_worker`): SLURM signals them
   too, and PyTorch's worker handler dies on a SIGTERM not sent by its parent, which would crash the rank
   before it could save. The rank ends its workers itself when it exits.
   When the workflow process that runs the job dies (``kill -9`` of Snakemake), the job's supervisor stops
   torchrun the same way (:func:`stop_child_when_orphaned`): a trainer never outlives its job. That process
   names itself when it parses the Snakefile (:func:`mark_workflow_process`), so the shell that started it
   may exit (``nohup snakemake … &``).
5. The job fails, the SLURM profile's ``retries`` resubmit it, and the new job resumes from the state folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what SLURM sends: preemption/scancel, and the time limit
SIGNALS_TO_HANDLE = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"  # torchrun forwards these to its ranks
SHUTDOWN_TIMEOUT_S = 120  # torchrun's least wait for the ranks after forwarding; rank 0 saves within it
EXIT_RESERVE_S = 30  # of the signal margin, left for torchrun, the job script and SLURM to wind down
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request, state saved, run again to resume


def ignore_stop_signal_in_workflow() -> None:
    """Keep the Snakemake process alive through SLURM's SIGUSR1 (the job's supervisor handles it).

    Outside the main thread (an API caller) signals cannot be set, and there is nothing to protect."""
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    except ValueError:
        pass


def torchrun_environment(env: MutableMapping[str, str], signal_margin_s: int = 0) -> MutableMapping[str, str]:
    """``env`` with torchrun told which signals to forward and how long to wait for its ranks' save: the
    signal margin less EXIT_RESERVE_S, at least SHUTDOWN_TIMEOUT_S (a user's values win)."""
    # torchrun sets TORCHELASTIC_SIGNALS_TO_HANDLE itself from --signals-to-handle, whose value it reads from
    # PET_SIGNALS_TO_HANDLE; without it SIGUSR1 would kill torchrun instead of reaching the ranks.
    env.setdefault("PET_SIGNALS_TO_HANDLE", SIGNALS_TO_HANDLE)
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(max(SHUTDOWN_TIMEOUT_S, signal_margin_s - EXIT_RESERVE_S)))
    return env


def forward_stop_signals(child: subprocess.Popen) -> None:
    """Pass SIGTERM, SIGUSR1 and SIGINT received by this process on to ``child`` (torchrun) as SIGTERM."""

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signal.SIGTERM)

    for sig in (*STOP_SIGNALS, signal.SIGINT):
        signal.signal(sig, forward)


def ignore_stop_signals_in_loader_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGTERM and SIGUSR1 (its rank decides)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


ORPHAN_POLL_S = 2.0  # how often the job's supervisor checks that the workflow process is alive
WORKFLOW_PROCESS_ENV = "VECSET_WORKFLOW_PROCESS"  # "<pid>:<start time>" of the Snakemake that runs the job


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, …), or None when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_identity(pid: int) -> str | None:
    """``pid:start time`` of a live process (a zombie counts as gone), or None: a reused PID has another."""
    fields = _stat(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return f"{pid}:{fields[19]}"


def _ancestors(pid: int) -> list[int]:
    chain: list[int] = []
    while pid > 1 and len(chain) < 64:
        fields = _stat(pid)
        if fields is None:
            break
        pid = int(fields[1])
        chain.append(pid)
    return chain


def mark_workflow_process(env: MutableMapping[str, str] = os.environ) -> None:
    """Name this process (the Snakemake that parses the Snakefile) as the one whose end stops a training job: its
    PID and start time in VECSET_WORKFLOW_PROCESS, which every job it runs inherits. A value inherited from a
    workflow further up (sbatch exports the environment to the job's own Snakemake) is replaced."""
    identity = process_identity(os.getpid())
    if identity is not None:
        env[WORKFLOW_PROCESS_ENV] = identity


def workflow_process(env: Mapping[str, str] = os.environ) -> str | None:
    """The workflow process named in ``env`` when it is an ancestor of this one and still the same process
    (``pid:start time``), else None."""
    value = env.get(WORKFLOW_PROCESS_ENV, "")
    pid = value.split(":", 1)[0]
    if not pid.isdigit() or int(pid) not in _ancestors(os.getpid()) or process_identity(int(pid)) != value:
        return None
    return value


def stop_child_when_orphaned(
    child: subprocess.Popen, on_orphan: Callable[[], None] | None = None, env: Mapping[str, str] = os.environ
) -> None:
    """Send ``child`` SIGTERM (save and stop) once the workflow process that runs this job has gone: the one named
    in VECSET_WORKFLOW_PROCESS (mark_workflow_process), else this process's parent. Only that process counts: a
    shell that started Snakemake and exited (``nohup snakemake &``) does not. Watches from a daemon thread
    until the child exits."""
    workflow = workflow_process(env)
    parent = os.getppid()

    def gone() -> bool:
        if workflow is not None:
            return process_identity(int(workflow.split(":")[0])) != workflow
        return os.getppid() != parent

    def watch() -> None:
        while child.poll() is None:
            if gone():
                if on_orphan is not None:
                    on_orphan()
                child.send_signal(signal.SIGTERM)
                return
            time.sleep(ORPHAN_POLL_S)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


class StopRequest:
    """Records a stop signal in a rank so the training loop can stop cleanly at its next step."""

    def __init__(self) -> None:
        self.signals: set[str] = set()  # the names of those that reached this process (SLURM's, torchrun's)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals.add(signal.Signals(signum).name)

    @property
    def requested(self) -> bool:
        """Whether a stop signal reached this process."""
        return bool(self.signals)

    @property
    def received(self) -> tuple[str, ...]:
        """The names of the stop signals that reached this process, sorted (empty: none did)."""
        return tuple(sorted(self.signals))
