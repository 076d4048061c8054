"""Figures and pages of one run for its report: training curves, per-structure Dice / HD95 box plots, input vs
reconstruction slices on the source image grid, the evaluation's tables and a 3D view of the same cases.

Figures are built with matplotlib's object API (``Figure``, no pyplot state), so they render headless on a
cluster node and every function writes exactly one PNG, atomically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage

from vecset.atomic import write_bytes_atomic
from vecset.data.label_image import class_volume, read_label_image
from vecset.data.mesh import Mesh
from vecset.data.ply import read_ply
from vecset.data.preprocess import load_case_meshes
from vecset.eval.colours import structure_colours
from vecset.eval.metrics import ABSENT
from vecset.eval.tables import Section, write_tables_page
from vecset.eval.viewer import ViewerCase, write_viewer

DPI = 110
# Per view: (axis held fixed, horizontal axis, vertical axis) in RAS-closest voxel order.
VIEWS = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
CROP_MARGIN = 6  # voxels kept around the foreground in slice panels


def _save(fig: Figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    write_bytes_atomic(Path(path), buffer.getvalue())


def read_metrics_log(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's metrics.jsonl as (one row per epoch with its training means, one row per validation), both
    by optimizer step; a resumed run's repeated epochs and validations keep their last record."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}: line {number} is not a metrics record (torn by a crash or a full disk, or edited); rerun "
                "the workflow: training repairs its log when it starts"
            )
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no metrics recorded; has the run trained at least one epoch?")
    table = pd.DataFrame(records)
    train = table[table.filter(like="train_").notna().any(axis=1)] if "train_loss" in table else table.iloc[0:0]
    val = table.dropna(subset=["val_mean_iou"]) if "val_mean_iou" in table else table.iloc[0:0]
    return (
        train.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True),
        val.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True),
    )


def plot_training_curves(metrics_jsonl: str | Path, out_png: str | Path, title: str = "") -> None:
    """Training losses (log scale) and validation IoU per optimizer step (the encoder's latent sets on uniform
    volume points, as training validates), the best validation marked."""
    train, val = read_metrics_log(metrics_jsonl)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    losses, ious = fig.subplots(1, 2)
    for key in [k for k in train.columns if k.startswith("train_") and k != "train_kl"]:
        values = train[key].where(train[key] > 0)
        losses.plot(train["step"], values, label=key.removeprefix("train_"), lw=1.8 if key == "train_loss" else 1)
    losses.set(yscale="log", xlabel="optimizer step", ylabel="loss (normalised units)", title="training losses")
    losses.legend(fontsize=8)
    for key in sorted(k for k in val.columns if k.startswith("val_iou/")):
        ious.plot(val["step"], val[key], lw=0.8, alpha=0.45, label=key.removeprefix("val_iou/"))
    for key, style in (("val_mean_iou", "k-"), ("val_mean_iou_large", "k--"), ("val_mean_iou_thin", "k:")):
        if key in val:
            ious.plot(val["step"], val[key], style, lw=2, label=key.removeprefix("val_"))
    if len(val):
        best = val.iloc[int(val["val_mean_iou"].to_numpy().argmax())]
        ious.axvline(best["step"], color="tab:red", lw=1)
        ious.annotate(
            f"best {best['val_mean_iou']:.3f} @ step {int(best['step'])}",
            (best["step"], best["val_mean_iou"]),
            textcoords="offset points",
            xytext=(4, 6),
            color="tab:red",
            fontsize=8,
        )
    ious.set(ylim=(0, 1), xlabel="optimizer step", ylabel="IoU (uniform points, sdf < 0)",
             title="validation IoU of the encoder's latent sets (not fitted)")  # fmt: skip
    ious.legend(fontsize=7, ncol=2, loc="upper left")
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


def plot_metric_boxes(
    metrics_csv: str | Path, out_png: str | Path, title: str = "", names: list[str] | None = None
) -> None:
    """Box plots of Dice and HD95 (mm) per structure over validation cases, each structure's points in its colour
    (``names``: the label map's order, which the colours follow); absent structures left out."""
    rows = pd.read_csv(metrics_csv)
    rows = rows[rows["status"] != ABSENT]
    structures = list(dict.fromkeys(rows["structure"]))
    names = names or structures
    colours = dict(zip(names, structure_colours(len(names)) / 255.0, strict=True))
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    for ax, metric, label in zip(fig.subplots(1, 2), ("dice", "hd95_mm"), ("Dice", "HD95 (mm)"), strict=True):
        data = [rows.loc[rows["structure"] == s, metric].dropna().to_numpy() for s in structures]
        ax.boxplot(data, showmeans=True, meanprops={"markersize": 4})
        for i, values in enumerate(data, start=1):
            jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(values))
            ax.plot(i + jitter, values, ".", color=colours.get(structures[i - 1], "tab:blue"), alpha=0.7, ms=4)
        ax.set_xticks(
            range(1, len(structures) + 1), [f"{s}\n(n={len(d)})" for s, d in zip(structures, data, strict=True)]
        )
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.set(ylabel=label, title=f"{label} per structure")
        if metric == "dice":
            ax.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


def pick_cases(metrics: pd.DataFrame, n: int) -> list[tuple[str, float]]:
    """``n`` cases spread from the worst to the best mean Dice (over structures present in the input)."""
    scored = metrics[metrics["status"] != ABSENT]
    mean_dice = scored.groupby("case")["dice"].mean().fillna(0.0).sort_values(kind="stable")
    if mean_dice.empty or n <= 0:
        return []
    picks = np.unique(np.round(np.linspace(0, len(mean_dice) - 1, min(n, len(mean_dice)))).astype(int))
    return [(str(mean_dice.index[i]), float(mean_dice.iloc[i])) for i in picks]


def canonical_labels(path: str | Path, case_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(labels reoriented to the closest RAS voxel order, voxel sizes in mm along the new axes), read and
    checked like every input (a singleton 4th axis dropped, non-integer labels refused)."""
    image = read_label_image(path, case_id or Path(path).name, max_voxels=None)  # meshed first: bounded there
    ornt = nib.orientations.io_orientation(image.affine)
    data = nib.orientations.apply_orientation(image.labels, ornt)
    sizes = image.voxel_sizes[ornt[:, 0].astype(int)]
    return data, sizes


def plot_slices(
    cases: list[tuple[str, str | Path, str | Path, str]],
    label_map: dict[str, int],
    out_png: str | Path,
    title: str = "",
) -> None:
    """Per case (id, input NIfTI, reconstructed NIfTI, row label): input and reconstruction in three views
    through the input's foreground centre, on the same grid, with the voxel spacing as aspect ratio."""
    names, values = list(label_map), list(label_map.values())
    colours = structure_colours(len(names)) / 255.0
    palette = [(0.0, 0.0, 0.0, 1.0), *((r, g, b, 1.0) for r, g, b in colours)]
    cmap = ListedColormap(palette)
    fig = Figure(figsize=(10, 3.3 * 2 * max(len(cases), 1)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2 * max(len(cases), 1), 3, squeeze=False))
    for row, (case, input_path, recon_path, label) in enumerate(cases):
        truth, sizes = canonical_labels(input_path, case)
        recon, recon_sizes = canonical_labels(recon_path, case)
        if truth.shape != recon.shape or not np.allclose(sizes, recon_sizes):
            raise ValueError(f"{case}: reconstruction {recon_path} is not on the input's grid")
        truth, recon = class_volume(truth, values), class_volume(recon, values)
        foreground = truth > 0
        if not foreground.any():
            foreground = np.ones_like(foreground)
        centre = np.round(ndimage.center_of_mass(foreground)).astype(int)
        lo = np.maximum(np.argwhere(foreground | (recon > 0)).min(axis=0) - CROP_MARGIN, 0)
        hi = np.minimum(np.argwhere(foreground | (recon > 0)).max(axis=0) + CROP_MARGIN + 1, truth.shape)
        for col, (view, (fixed, h, v)) in enumerate(VIEWS.items()):
            for r, (volume, what) in enumerate(((truth, "input"), (recon, "reconstruction"))):
                ax = axes[2 * row + r, col]
                plane = np.take(volume, centre[fixed], axis=fixed)
                keep = [slice(lo[a], hi[a]) for a in range(3) if a != fixed]
                plane = plane[tuple(keep)]  # axes (h, v): VIEWS lists them in increasing order
                ax.imshow(
                    plane.T,
                    origin="lower",
                    cmap=cmap,
                    vmin=0,
                    vmax=len(names),
                    interpolation="nearest",
                    aspect=sizes[v] / sizes[h],
                )
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{case} {what}, {view}" if col else f"{label}\n{case} {what}, {view}", fontsize=8)
    handles = [Patch(color=palette[c + 1], label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, out_png)


def structure_colour_css(names: list[str]) -> dict[str, str]:
    """Each structure's colour as CSS, from the one colour table."""
    return {name: f"rgb({r},{g},{b})" for name, (r, g, b) in zip(names, structure_colours(len(names)), strict=True)}


def write_tables(
    run: str,
    label_map: dict[str, int],
    metrics_csv: str | Path,
    summary_csv: str | Path,
    interfaces_csv: str | Path,
    interface_summary_csv: str | Path,
    out_html: str | Path,
) -> None:
    """The evaluation's four tables on one sortable page: per structure, per shared wall, per case."""
    sections = [
        Section(
            "Per structure",
            "Mean and median over the validation cases where the structure is present, per metric side by side: "
            "<metric>_mean / _median: the fitted latent sets' reconstructions; <metric>_encoder_mean / _median: the "
            "encoder's own latent sets (no fitting); <metric>_oracle_mean: the same cases' own exact SDF through the "
            "same grid, label map and metrics (the ceiling this resolution allows). cldice: centreline Dice, for the "
            "tubular structures (eval.tubular).",
            pd.read_csv(summary_csv),
        ),
        Section(
            "Shared walls",
            "Per pair of structures that touch in the input: overlap = volume where both reconstructed SDFs are "
            "negative; gap = voxels of the pair's shared wall (both sides of the faces where they touch) that the "
            "reconstruction labels background; fractions of the smaller structure's input volume.",
            pd.read_csv(interface_summary_csv),
        ),
        Section(
            "Per case and structure",
            "Every validation case's metrics (metrics.csv): the fitted latent set's, and the encoder's (_encoder).",
            pd.read_csv(metrics_csv),
        ),
        Section(
            "Shared walls per case",
            "Every validation case's touching pairs (interfaces.csv).",
            pd.read_csv(interfaces_csv),
        ),
    ]
    write_tables_page(out_html, f"run {run}: evaluation tables", sections, structure_colour_css(list(label_map)))


def write_case_viewer(
    run: str,
    picks: list[tuple[str, str]],
    label_map: dict[str, int],
    mesh_dirs: dict[str, str],
    cases_dir: str | Path,
    out_html: str | Path,
    interfaces: pd.DataFrame | None = None,
) -> None:
    """The 3D page of the picked cases (id, caption): the input meshes (mesh rule) beside the reconstruction's, with
    each case's touching pairs (the rows of ``interfaces``, the evaluation's interfaces.csv) to view walls by."""
    names = list(label_map)
    cases = []
    for case, caption in picks:
        _, inputs = load_case_meshes(mesh_dirs[case])
        recon = [Mesh(*read_ply(Path(cases_dir) / case / f"{name}.ply")) for name in names]
        rows = interfaces[interfaces["case"] == case] if interfaces is not None else pd.DataFrame()
        walls = tuple((names.index(a), names.index(b)) for a, b in zip(rows.get("structure_a", []),
                      rows.get("structure_b", []), strict=True) if a in names and b in names)  # fmt: skip
        cases.append(ViewerCase(case, caption, inputs, recon, walls))
    write_viewer(out_html, cases, names, structure_colours(len(names)), f"run {run}: input and reconstruction in 3D")


def plot_run(
    run: str,
    training_log: str | Path,
    metrics_csv: str | Path,
    summary_csv: str | Path,
    interfaces_csv: str | Path,
    interface_summary_csv: str | Path,
    cases_dir: str | Path,
    label_paths: dict[str, str],
    mesh_dirs: dict[str, str],
    label_map: dict[str, int],
    n_cases: int,
    curves_png: str | Path,
    boxes_png: str | Path,
    slices_png: str | Path,
    tables_html: str | Path,
    viewer_html: str | Path,
) -> list[str]:
    """All figures and pages of one run; returns the ids of the cases drawn as slices and in 3D (worst to best)."""
    title = f"run {run}"
    plot_training_curves(training_log, curves_png, title)
    plot_metric_boxes(metrics_csv, boxes_png, title, list(label_map))
    picks = pick_cases(pd.read_csv(metrics_csv), n_cases)
    ranks = ["worst", "median", "best"] if len(picks) == 3 else [f"#{i + 1}" for i in range(len(picks))]
    captions = [(case, f"{rank}: mean Dice {dice:.3f}") for (case, dice), rank in zip(picks, ranks, strict=True)]
    plot_slices(
        [(case, label_paths[case], Path(cases_dir) / case / "labels.nii.gz", caption) for case, caption in captions],
        label_map,
        slices_png,
        title,
    )
    write_tables(run, label_map, metrics_csv, summary_csv, interfaces_csv, interface_summary_csv, tables_html)
    write_case_viewer(run, [(case, f"{case} ({caption})") for case, caption in captions], label_map, mesh_dirs,
                      cases_dir, viewer_html, pd.read_csv(interfaces_csv))  # fmt: skip
    return [case for case, _ in picks]
