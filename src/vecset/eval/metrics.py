"""Per-structure reconstruction metrics in millimetres: Dice, IoU, HD95, ASSD, centreline Dice for tubular
structures (label maps) and Chamfer (meshes).

Surface distances are Euclidean distances between the two masks' boundary voxels with the image's true voxel
spacing (a k-d tree: exactly what a distance transform gives), so anisotropic grids are measured in mm. A
structure absent from the input is reported as absent (NaN metrics and a status), never as a score of zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from vecset.geometry import mask_box

ABSENT = "absent"
MISSED = "missed"  # in the input, not in the reconstruction
EXTRA = "extra"  # in the reconstruction, not in the input
OK = "ok"


def overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(Dice, IoU) of two boolean masks; NaN when both are empty."""
    inter = np.count_nonzero(pred & truth)
    total = np.count_nonzero(pred) + np.count_nonzero(truth)
    if total == 0:
        return float("nan"), float("nan")
    union = total - inter
    return 2.0 * inter / total, inter / union


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a 6-neighbour outside it (the mask's surface layer)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from every boundary voxel of each mask to the nearest boundary voxel of the other, both
    directions (what a distance transform of the other boundary gives, at a fraction of its cost)."""
    scale = np.asarray(spacing, dtype=np.float64)
    pred_points = np.argwhere(_boundary(pred)) * scale
    truth_points = np.argwhere(_boundary(truth)) * scale
    to_truth, _ = cKDTree(truth_points).query(pred_points)
    to_pred, _ = cKDTree(pred_points).query(truth_points)
    return np.concatenate([to_truth, to_pred])


def hd95_assd(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """(95th-percentile Hausdorff distance, average symmetric surface distance) in mm; NaN if a mask is empty."""
    if not pred.any() or not truth.any():
        return float("nan"), float("nan")
    # Every boundary voxel of either mask lies in their box (and one voxel beyond): the distances are those of
    # the whole image, at a fraction of its size.
    box = mask_box(pred | truth)
    d = surface_distances(pred[box], truth[box], spacing)
    return float(np.percentile(d, 95)), float(d.mean())


def cl_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Centreline Dice of two boolean masks (Shit et al., CVPR 2021): the harmonic mean of the share of the
    prediction's skeleton inside the truth and of the truth's skeleton inside the prediction. A tube that breaks
    or that sprouts false branches loses it at any thickness, where Dice barely moves. NaN when both are empty."""
    if not pred.any() and not truth.any():
        return float("nan")
    if not pred.any() or not truth.any():
        return 0.0
    box = mask_box(pred | truth)
    pred, truth = pred[box], truth[box]
    pred_skeleton, truth_skeleton = skeletonize(pred), skeletonize(truth)
    precision = np.count_nonzero(pred_skeleton & truth) / max(int(np.count_nonzero(pred_skeleton)), 1)
    sensitivity = np.count_nonzero(truth_skeleton & pred) / max(int(np.count_nonzero(truth_skeleton)), 1)
    if precision + sensitivity == 0:
        return 0.0
    return 2.0 * precision * sensitivity / (precision + sensitivity)


def chamfer(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """Symmetric Chamfer distance (mean of the two mean nearest-neighbour distances), in the points' units."""
    if len(points_a) == 0 or len(points_b) == 0:
        return float("nan")
    d_ab, _ = cKDTree(points_b).query(points_a)
    d_ba, _ = cKDTree(points_a).query(points_b)
    return 0.5 * (float(d_ab.mean()) + float(d_ba.mean()))


def structure_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], tubular: bool = False
) -> dict[str, float | str]:
    """Dice, IoU, HD95 and ASSD (mm) of one structure's masks, centreline Dice where ``tubular`` (else NaN), with a
    status: ok, absent, missed or extra."""
    in_pred, in_truth = bool(pred.any()), bool(truth.any())
    status = OK if in_pred and in_truth else ABSENT if not in_truth and not in_pred else MISSED if in_truth else EXTRA
    nan = float("nan")
    if not in_truth:
        return {"status": status, "dice": nan, "iou": nan, "hd95_mm": nan, "assd_mm": nan, "cldice": nan}
    dice, iou = overlap(pred, truth)
    hd95, assd = hd95_assd(pred, truth, spacing)
    cldice = cl_dice(pred, truth) if tubular else nan
    return {"status": status, "dice": dice, "iou": iou, "hd95_mm": hd95, "assd_mm": assd, "cldice": cldice}
