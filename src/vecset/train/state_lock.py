"""One trainer per run state: an exclusive lock on the state folder that names its holder.

Two trainers on one ``state/`` (a workflow restarted while an orphaned job still trains, or a SLURM job still
running when the workflow is rerun) would log every epoch twice and overwrite each other's ``last.pt``. Rank 0
takes an ``flock`` on ``state/trainer.lock`` for the whole run and writes who it is (host, PID, SLURM job id,
start time) into the file. The kernel releases the lock when the holder exits, however it exits, so a lock
whose holder is gone is simply taken over; a second trainer gets :class:`StateInUseError` naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "trainer.lock"


class StateInUseError(RuntimeError):
    """Another trainer holds the run's state folder; the message says who and what to do."""


def _holder() -> dict[str, str | int | None]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
    except ValueError:
        return "another process"
    if not isinstance(h, dict):
        return "another process"
    job = f", SLURM job {h['slurm_job']}" if h.get("slurm_job") else ""
    return f"the trainer on {h.get('host')} (PID {h.get('pid')}{job}, started {h.get('started')})"


@contextlib.contextmanager
def state_lock(state_dir: str | Path) -> Iterator[None]:
    """Hold ``state_dir`` for this process for the duration of the block; :class:`StateInUseError` when
    another live process holds it."""
    path = Path(state_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise StateInUseError(
            f"{path} cannot be opened as the state folder's lock file ({err.strerror}); remove it (rm -r {path}) and "
            "rerun: the trainer makes a new one"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(path.read_text(errors="replace"))
            raise StateInUseError(
                f"{state_dir} is in use by {holder}; wait for it to finish, or stop it (it saves and exits on "
                "SIGTERM or scancel) and rerun. A lock whose holder has exited is taken over by itself"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
