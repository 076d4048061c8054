"""Errors that name the case, the file, the problem and the fix on one line."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class CaseInputError(Exception):
    """A problem with one case's input that the user has to fix, remap or exclude.

    ``str(err)`` is a single line: ``"<case>: <file>: <problem>; fix: <fix>"``.
    """

    def __init__(self, case_id: str, path: str | Path, problem: str, fix: str) -> None:
        self.case_id = case_id
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        line = f"{case_id}: {self.path}: {problem}; fix: {fix}"
        super().__init__(" ".join(line.split()))


def exclude_hint(case_id: str) -> str:
    """The standard last resort in a fix: exclude the case in the workflow's config."""
    return f"or add '{case_id}' to 'exclude' in the workflow config"


# What torch.save says when a write fails (it never says why): a full disk, almost always.
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def _free_space(path: str | Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:,.0f} MB free"
    except OSError:
        return "free space unknown"


# Snakemake leaves this file in each folder a rule declares as a directory() output.
DIRECTORY_OUTPUT_MARK = ".snakemake_timestamp"


def _directory_output(filename: str | bytes | int | None) -> Path | None:
    """The directory output of the workflow that holds ``filename``, if one does: rerunning the workflow does not
    rebuild a file missing inside one."""
    if not isinstance(filename, str):
        return None
    for folder in Path(filename).parents:
        if (folder / DIRECTORY_OUTPUT_MARK).exists():
            return folder
    return None


def describe_failure(err: BaseException, where: str | Path = ".") -> str:
    """One plain line for an exception a job did not expect: :func:`known_failure`'s reason and fix, else its
    type and message."""
    return known_failure(err, where) or f"{type(err).__name__}: {' '.join(str(err).split())} (traceback above)"


def known_failure(err: BaseException, where: str | Path = ".") -> str | None:
    """The reason and the fix, on one line, when ``err`` has a known cause (no space left, no permission, a
    missing file, a failed checkpoint write; ``where`` is the folder being written); None otherwise."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        target = f" writing {err.filename}" if err.filename else ""
        folder = Path(err.filename).parent if err.filename else Path(where)
        return f"no space left on device{target} ({_free_space(folder)} in {folder.resolve()}); free space and rerun"
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {err.filename or err}; check who owns that folder and its mode, then rerun"
    if isinstance(err, FileNotFoundError):
        output = _directory_output(err.filename)
        if output is not None:  # Snakemake sees the folder, not what is missing inside it
            return f"file not found: {err.filename}; delete {output} and rerun the workflow to rebuild it"
        return f"file not found: {err.filename or err}; rerun the workflow to rebuild it, or restore it"
    if isinstance(err, RuntimeError) and any(text in str(err) for text in TORCH_WRITE_FAILURES):
        return (
            f"writing a checkpoint failed, most likely a full disk ({_free_space(where)} in {Path(where).resolve()}); "
            f"free space and rerun (the torch error: {' '.join(str(err).split())[:200]})"
        )
    return None
