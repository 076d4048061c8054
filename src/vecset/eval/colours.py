"""One colour per structure, shared by every figure, the 3D view and the label description files written beside
each reconstructed label map (ITK-SNAP's and 3D Slicer's formats: load one with the NIfTI to see names and colours).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps

from vecset.atomic import write_bytes_atomic

ITKSNAP_FILE = "labels.itksnap.txt"  # ITK-SNAP: Segmentation > Import Label Descriptions
SLICER_FILE = "labels.ctbl"  # 3D Slicer: drag in as a color table, then pick it in the segmentation's display


def structure_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB, one per class in label-map order: matplotlib's tab10 (tab20 beyond ten classes)."""
    table = colormaps["tab10" if n <= 10 else "tab20"]
    return np.round(np.asarray([table(c % 20)[:3] for c in range(n)]) * 255).astype(np.uint8)


def itksnap_descriptions(label_map: dict[str, int]) -> str:
    """ITK-SNAP label description file: index, RGB, alpha, visibility, mesh visibility, "name"."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# written by vecset (vecset.eval.colours)",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for (name, value), (r, g, b) in zip(label_map.items(), structure_colours(len(label_map)), strict=True):
        lines.append(f'{value:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{name}"')
    return "\n".join(lines) + "\n"


def slicer_color_table(label_map: dict[str, int]) -> str:
    """3D Slicer color table: index, name, RGBA (0-255) per line; background transparent."""
    lines = ["# Color table file written by vecset (vecset.eval.colours)", "0 background 0 0 0 0"]
    for (name, value), (r, g, b) in zip(label_map.items(), structure_colours(len(label_map)), strict=True):
        lines.append(f"{value} {name} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


def write_label_descriptions(folder: str | Path, label_map: dict[str, int]) -> list[Path]:
    """Both description files in ``folder``, beside a label map with ``label_map``'s raw values."""
    paths = [Path(folder) / ITKSNAP_FILE, Path(folder) / SLICER_FILE]
    for path, text in zip(paths, (itksnap_descriptions(label_map), slicer_color_table(label_map)), strict=True):
        write_bytes_atomic(path, text.encode("utf-8"))
    return paths
