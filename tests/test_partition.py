"""eval.partition: every structure's mesh and the label map from one partition of space, so touching structures
share their wall (no overlap, no sliver of background between them) and their meshes share the wall's vertices."""

from __future__ import annotations

import numpy as np
import torch

from vecset.data.mesh import is_closed
from vecset.eval.decode import decode_dense, numpy_sdf
from vecset.eval.reconstruct import grid_meshes, label_map_on_image, partition_background, partition_field

RESOLUTION = 49
CELL = 2.0 / (RESOLUTION - 1)


def two_spheres(gap: float) -> torch.Tensor:
    """The exact SDFs of two balls of radius 0.4 on the x axis whose surfaces are ``gap`` apart (negative:
    they overlap by that much), decoded densely."""
    centres = np.array([[-0.4 - gap / 2, 0.0, 0.0], [0.4 + gap / 2, 0.0, 0.0]])

    def sdf(points: np.ndarray) -> np.ndarray:
        return np.stack([np.linalg.norm(points - c, axis=1) - 0.4 for c in centres], axis=1)

    return decode_dense(numpy_sdf(sdf), RESOLUTION).values


def inside_counts(field: torch.Tensor) -> torch.Tensor:
    """Per grid point, how many classes claim it."""
    return (field < 0).sum(dim=0)


def shared_vertices(a: np.ndarray, b: np.ndarray) -> int:
    """Vertices of ``a`` that are (to 1e-9) vertices of ``b``."""
    keys = {tuple(v) for v in np.round(b, 9)}
    return sum(tuple(v) in keys for v in np.round(a, 9))


def test_overlapping_structures_are_split_at_their_bisector_and_share_the_wall():
    grid = two_spheres(gap=-6 * CELL)
    assert int((inside_counts(grid) > 1).sum()) > 0, "the fixture overlaps"
    field = partition_field(grid, sliver_cells=2.0)
    assert int((inside_counts(field) > 1).sum()) == 0, "each grid point belongs to at most one structure"
    a, b = grid_meshes(field, np.zeros(3), 1.0)
    assert is_closed(a.faces) and is_closed(b.faces)
    wall_a = a.vertices[np.abs(a.vertices[:, 0]) < 0.5 * CELL]
    assert len(wall_a) > 20, "the wall is the bisector plane x = 0"
    assert shared_vertices(wall_a, b.vertices) == len(wall_a), "every vertex of the wall is on both meshes"


def test_a_sliver_narrower_than_the_setting_is_split_and_a_wider_gap_stays_background():
    narrow = two_spheres(gap=1.0 * CELL)
    field = partition_field(narrow, sliver_cells=2.0)
    nodes = torch.linspace(-1, 1, RESOLUTION)
    on_axis = field[:, :, RESOLUTION // 2, RESOLUTION // 2]
    between = (nodes.abs() < 0.5 * CELL + 1e-6).nonzero().flatten()
    # A point on the bisector is on both walls (φ = 0): no point of the sliver is background.
    assert bool((on_axis[:, between] <= 0).any(dim=0).all()), "the sliver's points go to a structure"
    a, b = grid_meshes(field, np.zeros(3), 1.0)
    assert is_closed(a.faces) and is_closed(b.faces) and shared_vertices(a.vertices, b.vertices) > 20
    wide = partition_field(two_spheres(gap=6 * CELL), sliver_cells=2.0)
    gap_points = (nodes.abs() < 2 * CELL).nonzero().flatten()
    assert bool((wide[:, gap_points, RESOLUTION // 2, RESOLUTION // 2] > 0).all()), "a real gap stays background"


def test_without_other_structures_the_partition_keeps_each_structure_as_it_is():
    grid = two_spheres(gap=10 * CELL)
    field = partition_field(grid, sliver_cells=2.0)
    assert torch.equal(field < 0, grid < 0), "apart, each structure keeps exactly its own inside"


def test_the_partitioned_label_map_has_no_overlap():
    grid = two_spheres(gap=-6 * CELL)
    affine = np.diag([0.03, 0.03, 0.03, 1.0])
    affine[:3, 3] = -1.0
    shape = (67, 67, 67)
    plain = label_map_on_image(grid, np.zeros(3), 1.0, affine, shape, [1, 2])
    split = label_map_on_image(grid, np.zeros(3), 1.0, affine, shape, [1, 2], partition_background(grid, 2.0))
    assert plain.overlap_voxels[0, 1] > 0 and split.overlap_voxels[0, 1] == 0
    union, grown = plain.labels > 0, split.labels > 0
    assert np.all(grown[union]), "every voxel the structures claim stays claimed"
    # The crease where the two balls meet is a sliver too: filled, a fillet a grid cell or two wide.
    assert grown.sum() < 1.03 * union.sum()
