"""Report figures: which cases are drawn, resumed training logs, and the slice figure's grid check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from vecset.eval.plots import (
    canonical_labels,
    pick_cases,
    plot_metric_boxes,
    plot_slices,
    plot_training_curves,
    read_metrics_log,
)

from conftest import DEFAULT_LABELS, small_phantom, write_nifti


def _metrics(dice_by_case: dict[str, list[float | None]]) -> pd.DataFrame:
    rows = []
    for case, values in dice_by_case.items():
        for structure, dice in zip(DEFAULT_LABELS, values, strict=False):
            status = "absent" if dice is None else "ok"
            rows.append({"case": case, "structure": structure, "status": status, "dice": dice, "hd95_mm": 1.0})
    return pd.DataFrame(rows)


def test_picked_cases_run_from_worst_to_best_ignoring_absent_structures():
    table = _metrics({"a": [0.9, None], "b": [0.2, 0.4], "c": [0.6, 0.6], "d": [0.5, 0.5], "e": [0.1, 0.1]})
    # Mean Dice over present structures: a 0.9 (its absent one left out, not counted as 0), e 0.1.
    assert [case for case, _ in pick_cases(table, 3)] == ["e", "d", "a"]
    assert pick_cases(table, 10)[0] == ("e", pytest.approx(0.1))
    assert len(pick_cases(table, 10)) == 5


def test_resumed_epochs_keep_their_last_record_and_validations_inside_epochs_are_kept(tmp_path):
    log = tmp_path / "metrics.jsonl"
    records = [{"epoch": 1, "step": 2, "train_loss": 3.0}, {"epoch": 2, "step": 3, "val_mean_iou": 0.2}]
    records += [{"epoch": 2, "step": 4, "train_loss": 2.0}, {"epoch": 2, "step": 4, "train_loss": 1.5}]
    records.append({"epoch": 3, "step": 6, "train_loss": 1.0, "val_mean_iou": 0.5, "val_iou/aorta": 0.5})
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    train, val = read_metrics_log(log)
    assert list(train["epoch"]) == [1, 2, 3] and train["train_loss"].tolist() == [3.0, 1.5, 1.0]
    assert val["step"].tolist() == [3, 6] and val["val_mean_iou"].tolist() == [0.2, 0.5]
    plot_training_curves(log, tmp_path / "curves.png")
    assert imread(tmp_path / "curves.png").shape[2] in (3, 4)
    (tmp_path / "torn.jsonl").write_text(json.dumps(records[0]) + '\n{"epoch": 2, "st\n')
    with pytest.raises(ValueError, match=r"torn.jsonl: line 2 is not a metrics record .*rerun the workflow"):
        read_metrics_log(tmp_path / "torn.jsonl")
    (tmp_path / "null.jsonl").write_text(json.dumps(records[0]) + "\nnull\n")  # valid JSON, not a record
    with pytest.raises(ValueError, match=r"null.jsonl: line 2 is not a metrics record"):
        read_metrics_log(tmp_path / "null.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no metrics recorded"):
        read_metrics_log(tmp_path / "empty.jsonl")


def test_box_plots_render(tmp_path):
    table = _metrics({"a": [0.9, None, 0.3], "b": [0.2, 0.4, 0.0]})
    table.to_csv(tmp_path / "metrics.csv", index=False)
    plot_metric_boxes(tmp_path / "metrics.csv", tmp_path / "boxes.png", "run x")
    assert imread(tmp_path / "boxes.png").ndim == 3


def test_canonical_orientation_and_slice_grid_check(tmp_path):
    volume, affine = small_phantom(1)
    write_nifti(tmp_path / "in.nii.gz", volume, affine)
    data, sizes = canonical_labels(tmp_path / "in.nii.gz")
    assert sorted(data.shape) == sorted(volume.shape)
    assert np.allclose(sorted(sizes), sorted(np.linalg.norm(affine[:3, :3], axis=0)))
    assert np.bincount(data.ravel()).tolist() == np.bincount(volume.ravel()).tolist()
    plot_slices([("c1", tmp_path / "in.nii.gz", tmp_path / "in.nii.gz", "same")], DEFAULT_LABELS, tmp_path / "s.png")
    assert imread(tmp_path / "s.png").ndim == 3
    write_nifti(tmp_path / "other.nii.gz", volume[:-1], affine)
    mismatched = [("c1", tmp_path / "in.nii.gz", tmp_path / "other.nii.gz", "x")]
    with pytest.raises(ValueError, match=r"c1: reconstruction .* is not on the input's grid"):
        plot_slices(mismatched, DEFAULT_LABELS, tmp_path / "t.png")


def test_slices_read_inputs_like_the_workflow_does(tmp_path):
    """A label map with a singleton 4th axis is accepted as input, so the slice figure must read it as 3-D."""
    volume, affine = small_phantom(2)
    write_nifti(tmp_path / "in4d.nii.gz", volume[..., None], affine)
    write_nifti(tmp_path / "recon.nii.gz", volume, affine)
    data, _ = canonical_labels(tmp_path / "in4d.nii.gz", "c4")
    assert data.ndim == 3
    plot_slices([("c4", tmp_path / "in4d.nii.gz", tmp_path / "recon.nii.gz", "4d")], DEFAULT_LABELS, tmp_path / "s.png")
