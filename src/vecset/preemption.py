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
   torchrun the same way (:func:`stop_child_when_orphaned`): a trainer never outlives its job.
5. The job fails, the SLURM profile's ``retries`` resubmit it, and the new job resumes from the state folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, MutableMapping
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


ORPHAN_POLL_S = 2.0  # how often the job's supervisor checks that the workflow process above it is alive


def _parent_of(pid: int) -> int | None:
    """The parent PID of ``pid`` (Linux /proc), or None when it cannot be read."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_child_when_orphaned(child: subprocess.Popen, on_orphan: Callable[[], None] | None = None) -> None:
    """Send ``child`` SIGTERM (save and stop) once this process's parent or grandparent has gone: Snakemake
    runs a job's script under a shell, so when Snakemake is killed the shell lives on and only the
    grandparent disappears. Watches from a daemon thread until the child exits."""
    watched = [pid for pid in (os.getppid(), _parent_of(os.getppid())) if pid and pid > 1]
    parent = os.getppid()

    def watch() -> None:
        while child.poll() is None:
            if os.getppid() != parent or not all(_alive(pid) for pid in watched):
                if on_orphan is not None:
                    on_orphan()
                child.send_signal(signal.SIGTERM)
                return
            time.sleep(ORPHAN_POLL_S)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


class StopRequest:
    """Records a stop signal in a rank so the training loop can stop cleanly at its next step."""

    def __init__(self) -> None:
        self.requested = False
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
