"""Train/validation split that depends only on each case's id and the seed.

Each case gets a number ``u`` in [0, 1) from sha256(seed, case id). With ``folds`` < 2 a case is in
validation when ``u < val_fraction``; with ``folds`` = K it belongs to fold ``floor(u * K)`` and the
validation side of fold k is that fold. Adding or removing cases therefore never moves another case.

Tiny datasets: when no case falls on the validation side, the case with the smallest ``u`` is moved there
(and the largest to training when training would be empty), so a 3-case demo still validates. Only then
can adding a case move that one case back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

from vecset.atomic import write_bytes_atomic
from vecset.settings import SplitSettings

SPLIT_COLUMNS = ("case", "sample", "fold")


def case_unit(case_id: str, seed: int) -> float:
    """A stable number in [0, 1) for ``case_id`` under ``seed`` (first 53 bits of a sha256)."""
    digest = hashlib.sha256(f"{seed}\0{case_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def case_fold(case_id: str, settings: SplitSettings, seed: int) -> int:
    """The fold of a case: 0..K-1 with K folds; without folds 0 = validation, 1 = training."""
    u = case_unit(case_id, seed)
    if settings.folds >= 2:
        return min(int(u * settings.folds), settings.folds - 1)
    return 0 if u < settings.val_fraction else 1


def split_cases(case_ids: list[str], settings: SplitSettings, seed: int, fold: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) case ids, each sorted; ``fold`` picks the validation fold when folds are used."""
    if settings.folds >= 2 and not 0 <= fold < settings.folds:
        raise ValueError(f"fold must be in 0..{settings.folds - 1}, got {fold}")
    val_fold = fold if settings.folds >= 2 else 0
    train: list[str] = []
    val: list[str] = []
    for case in sorted(set(case_ids)):
        (val if case_fold(case, settings, seed) == val_fold else train).append(case)
    if len(train) + len(val) >= 2:
        by_unit = sorted(train + val, key=lambda c: case_unit(c, seed))
        if not val:
            val.append(by_unit[0])
            train.remove(by_unit[0])
        elif not train:
            train.append(by_unit[-1])
            val.remove(by_unit[-1])
    return sorted(train), sorted(val)


def write_split_csv(
    path: Path, cases: list[str], sample_paths: dict[str, Path], settings: SplitSettings, seed: int
) -> None:
    """Write ``case,sample,fold`` rows; sample paths are relative to the CSV's folder."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    for case in cases:
        relative = os.path.relpath(Path(sample_paths[case]).resolve(), path.parent.resolve())
        writer.writerow([case, Path(relative).as_posix(), case_fold(case, settings, seed)])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


def read_split_csv(path: Path) -> list[tuple[str, Path]]:
    """(case id, absolute sample path) rows of a split CSV; relative paths resolve against the CSV's folder."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("case", "sample") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: split CSV lacks column(s) {missing}; regenerate it with the split rule")
        return [(row["case"], (path.parent / row["sample"]).resolve()) for row in reader]


def write_split(
    sample_paths: dict[str, Path],
    outputs: list[Path],
    excluded: dict[str, str],
    excluded_path: Path,
    settings: SplitSettings,
    seed: int,
) -> dict[str, tuple[int, int]]:
    """Write train.csv / val.csv for every fold folder in ``outputs`` (order: train, val per fold) and the
    cases left out, with why (``excluded``: case → reason), to ``excluded_path``; returns {folder: (n_train,
    n_val)}."""
    cases = sorted(sample_paths)
    pairs = [(Path(outputs[i]), Path(outputs[i + 1])) for i in range(0, len(outputs), 2)]
    counts = {}
    for fold, (train_csv, val_csv) in enumerate(pairs):
        train, val = split_cases(cases, settings, seed, fold if settings.folds >= 2 else 0)
        write_split_csv(train_csv, train, sample_paths, settings, seed)
        write_split_csv(val_csv, val, sample_paths, settings, seed)
        counts[str(train_csv.parent)] = (len(train), len(val))
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerows([("case", "reason"), *sorted(excluded.items())])
    write_bytes_atomic(excluded_path, table.getvalue().encode("utf-8"))
    return counts
