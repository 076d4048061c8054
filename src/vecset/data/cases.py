"""Which entries of an input folder are cases: case ids that every output's file name can carry, and files
that can be read. Torch-free and numpy-free: parsing the Snakefile imports it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

# The longest file name derived from a case id: a temp file of an atomic write, ".{case}.npz.XXXXXXXX.tmp".
DERIVED_NAME_EXTRA = len(".") + len(".npz") + len(".XXXXXXXX.tmp")
MAX_NAME_BYTES = 255  # ext4, xfs, btrfs, Lustre, GPFS
UNSAFE = re.compile(r"[{}/\\\x00-\x1f]")  # wildcard braces, path separators, control characters
LABEL_MAP_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


# Snakemake refuses a whole DAG over one wildcard value whose end repeats a part 20 times or more
# (snakemake.io.PeriodicityDetector): such a case is skipped alone instead.
PERIODIC_END = re.compile(r"(.+?)\1{19,}$")


def case_id_problem(case: str) -> str | None:
    """Why ``case`` cannot be a case id (a reason to skip it), or None."""
    if UNSAFE.search(case):
        return "its name holds a path separator, a brace or a control character (a file in a subfolder?)"
    if case.startswith(".") or case != case.strip():
        return "its name starts with a dot or has leading or trailing spaces"
    size = len(case.encode("utf-8"))
    if size + DERIVED_NAME_EXTRA > MAX_NAME_BYTES:
        return f"its name is {size} bytes; file names made from it would pass {MAX_NAME_BYTES} (rename it shorter)"
    periodic = PERIODIC_END.search(case)
    if periodic:
        return (
            f"its name ends in {periodic.group(1)!r} repeated 20 times or more, which Snakemake refuses as a "
            "wildcard value (rename it)"
        )
    return None


def usable_cases(found: Iterable[str], path_of: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(case ids to process, {skipped case id: its file and the reason}): ids that are valid and whose file can
    be opened."""
    cases, skipped = [], {}
    for case in sorted(found):
        problem = case_id_problem(case)
        if problem is None and not os.path.isfile(path_of[case]):
            problem = "not a readable file (a dangling or looping link, or a folder)"
        if problem is None and not os.access(path_of[case], os.R_OK):
            problem = "not readable (permissions)"
        if problem:
            skipped[case] = f"{path_of[case]}: {problem}"
        else:
            cases.append(case)
    return cases, skipped


def near_misses(folder: str, matched: Iterable[str], limit: int = 5) -> list[str]:
    """Label-map-looking files in ``folder`` (.nii, .nii.gz in any case) that the input pattern did not match."""
    taken = {os.path.basename(p) for p in matched}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [n for n in names if LABEL_MAP_SUFFIX.search(n) and n not in taken][:limit]
