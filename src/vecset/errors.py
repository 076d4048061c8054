"""Errors that name the case, the file, the problem and the fix on one line."""

from __future__ import annotations

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
