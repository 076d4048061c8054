"""A self-contained HTML page to turn a few cases' input and reconstructed meshes in 3D (for the Snakemake report).

The page carries its script (viewer.js, WebGL 1) and its meshes (base64 uint16 positions quantised over each
mesh's box in world mm, uint16 indices), so it opens offline and inside the report's iframe: nothing is fetched.
Meshes are coarsened for display by vertex clustering to at most ``FACE_BUDGET`` faces each (a real-size
structure has ~350 k), which keeps three cases of ten structures, input and reconstruction, to about 3 MB.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from vecset.atomic import write_bytes_atomic
from vecset.data.mesh import Mesh
from vecset.data.samples import face_areas_normals

FACE_BUDGET = 5000  # faces per structure and side on the page: uint16 indices, 3 cases of 10 structures ~3 MB
_CELL_GROWTH = 1.25  # per coarsening attempt that still has too many faces


@dataclass(frozen=True)
class ViewerCase:
    """One case on the page: its caption, its meshes per structure, input and reconstruction (world mm), and the
    pairs of structures (class indices) that touch in its input, whose shared wall the page can show from each
    side."""

    case_id: str
    caption: str
    input: list[Mesh]
    reconstruction: list[Mesh]
    walls: tuple[tuple[int, int], ...] = ()


def cluster_vertices(mesh: Mesh, cell_mm: float) -> Mesh:
    """The mesh with its vertices merged per cubic cell of ``cell_mm`` (their mean), collapsed and repeated faces
    dropped: a display mesh, not guaranteed manifold."""
    keys = np.floor((mesh.vertices - mesh.vertices.min(axis=0)) / cell_mm).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    vertices = np.zeros((len(counts), 3))
    np.add.at(vertices, cluster, mesh.vertices)
    vertices /= counts[:, None]
    faces = cluster[mesh.faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[keep]
    # The same triangle from both sides of a thin part, or twice: keep one per vertex set and orientation.
    turn = (faces.argmin(axis=1)[:, None] + np.arange(3)) % 3  # each face's rotation that starts at its least index
    _, first = np.unique(np.take_along_axis(faces, turn, axis=1), axis=0, return_index=True)
    return Mesh(vertices, faces[np.sort(first)])


def display_mesh(mesh: Mesh, face_budget: int = FACE_BUDGET) -> Mesh:
    """``mesh`` itself when within ``face_budget`` faces, else vertex-clustered with the finest cell that fits."""
    if mesh.n_faces <= face_budget:
        return mesh
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    # A surface clustered on cells of h has about 2 x area / h² faces: start at the cell size of the budget.
    area = float(face_areas_normals(mesh)[0].sum())
    cell = max(np.sqrt(2.0 * area / face_budget), extent * 1e-4)
    while True:
        coarse = cluster_vertices(mesh, cell)
        if coarse.n_faces <= face_budget or cell > extent:
            return coarse
        cell *= _CELL_GROWTH


def _encoded(mesh: Mesh) -> dict | None:
    """A display mesh for the page: positions quantised to uint16 over its box (``origin`` + q / 65535 ×
    ``extent``, micrometres at heart size) and uint16 indices, base64."""
    if not mesh.n_faces:
        return None
    if len(mesh.vertices) > 1 << 16:
        raise ValueError(f"a display mesh has {len(mesh.vertices)} vertices; uint16 indices hold 65536")
    origin = mesh.vertices.min(axis=0)
    extent = np.maximum(mesh.vertices.max(axis=0) - origin, 1e-9)
    quantised = np.round((mesh.vertices - origin) / extent * 65535).astype("<u2")
    return {
        "origin": origin.tolist(),
        "extent": extent.tolist(),
        "positions": base64.b64encode(quantised.tobytes()).decode(),
        "indices": base64.b64encode(np.ascontiguousarray(mesh.faces, dtype="<u2").tobytes()).decode(),
    }


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh; }}
header {{ padding: 6px 10px; display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; }}
#structures label {{ margin-right: 10px; white-space: nowrap; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px; vertical-align: -1px; }}
#view {{ flex: 1; width: 100%; min-height: 360px; }}
#status {{ padding: 4px 10px; color: #444; }}
</style>
</head>
<body>
<header><strong>{title}</strong> <select id="case"></select> <select id="wall"></select>
<button id="side" disabled>other side</button> <span id="structures"></span></header>
<canvas id="view"></canvas>
<div id="status">Loading the 3D view (needs JavaScript and WebGL)…</div>
<script>const VIEWER_DATA = {data};</script>
<script>{script}</script>
</body>
</html>
"""


def viewer_html(cases: list[ViewerCase], names: list[str], colours: np.ndarray, title: str) -> str:
    """The page: a case menu, a menu of each case's touching pairs (one structure of the pair drawn, a button
    for the other: the shared wall from each side), a toggle per structure (its name and colour, ``colours`` (C, 3)
    0-255), and the input beside the reconstruction under one camera."""
    data = {
        "names": names,
        "colours": np.asarray(colours, dtype=int).tolist(),
        "cases": [
            {
                "id": case.case_id,
                "caption": case.caption,
                "input": [_encoded(display_mesh(m)) for m in case.input],
                "reconstruction": [_encoded(display_mesh(m)) for m in case.reconstruction],
                "walls": [list(pair) for pair in case.walls],
            }
            for case in cases
        ],
    }
    script = resources.files("vecset.eval").joinpath("viewer.js").read_text(encoding="utf-8")
    # "</" cannot end the inline script early: JSON allows "<\\/" for it.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return PAGE.format(title=html.escape(title), data=payload, script=script)


def write_viewer(path: str | Path, cases: list[ViewerCase], names: list[str], colours: np.ndarray, title: str) -> None:
    """Write :func:`viewer_html` to ``path`` atomically."""
    write_bytes_atomic(Path(path), viewer_html(cases, names, colours, title).encode("utf-8"))
