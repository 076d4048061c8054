"""Train/val split: stable under added cases, k folds, relative paths, excluded list."""

from __future__ import annotations

import csv

import pytest

from vecset.data.split import case_fold, read_split_csv, split_cases, write_split
from vecset.settings import SplitSettings


def test_adding_cases_never_moves_existing_ones():
    settings = SplitSettings(val_fraction=0.25)
    before = split_cases([f"c{i:03d}" for i in range(200)], settings, 3)
    after = split_cases([f"c{i:03d}" for i in range(260)], settings, 3)
    assert set(before[0]) <= set(after[0]) and set(before[1]) <= set(after[1])
    assert 0.15 < len(after[1]) / 260 < 0.35
    assert split_cases([f"c{i:03d}" for i in range(200)], SplitSettings(0.25), 4) != before


def test_folds_partition_cases_and_each_fold_validates_once():
    settings = SplitSettings(folds=5)
    cases = [f"case{i}" for i in range(100)]
    vals = [set(split_cases(cases, settings, 0, fold)[1]) for fold in range(5)]
    assert set().union(*vals) == set(cases)
    assert sum(len(v) for v in vals) == len(cases)
    assert all(case_fold(c, settings, 0) == k for k, v in enumerate(vals) for c in v)
    with pytest.raises(ValueError, match="fold must be"):
        split_cases(cases, settings, 0, fold=5)


def test_tiny_dataset_still_has_both_sides():
    train, val = split_cases(["a", "b", "c"], SplitSettings(val_fraction=0.01), 0)
    assert len(val) == 1 and len(train) == 2


def test_csv_paths_are_relative_to_the_csv_and_resolve_from_anywhere(tmp_path, monkeypatch):
    samples = {c: tmp_path / "results" / "samples" / f"{c}.npz" for c in ("a", "b", "c", "d")}
    for p in samples.values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    out = [tmp_path / "results" / "splits" / "train.csv", tmp_path / "results" / "splits" / "val.csv"]
    excluded = {"bad_case": "in 'exclude' of the workflow config", "odd{1}": "inputs/odd{1}.nii.gz: braces, a, b"}
    write_split(samples, out, excluded, tmp_path / "results" / "splits" / "excluded.csv", SplitSettings(0.5), 0)
    with open(out[0]) as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["sample"].startswith("../samples/") for r in rows)
    monkeypatch.chdir(tmp_path / "results")  # the seed resolved paths from the working directory
    loaded = read_split_csv(out[0]) + read_split_csv(out[1])
    assert sorted(case for case, _ in loaded) == ["a", "b", "c", "d"]
    assert all(path == samples[case].resolve() for case, path in loaded)
    with open(tmp_path / "results" / "splits" / "excluded.csv", newline="") as handle:
        assert {row["case"]: row["reason"] for row in csv.DictReader(handle)} == excluded
