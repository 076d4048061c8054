"""The report's HTML pages opened in a real headless browser (Chromium, software WebGL), with the network shut
off: the 3D view loads, draws its meshes into the canvas and names every structure; the tables page holds every
row and sorts by a column."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from vecset.eval.colours import structure_colours
from vecset.eval.reconstruct import grid_meshes
from vecset.eval.tables import Section, write_tables_page
from vecset.eval.viewer import FACE_BUDGET, ViewerCase, cluster_vertices, display_mesh, write_viewer

from conftest import DEFAULT_LABELS, exact_reconstruction

pytestmark = pytest.mark.workflow  # a real browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def chromium() -> str:
    """A headless Chromium: the installed one, else Debian's, installed here as root (like the SLURM tests)."""
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True, env=env,
                       timeout=900)  # fmt: skip
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("the page tests need Chromium (apt-get install chromium)")
    return found


def dom_after_load(browser: str, page, script: str = "") -> str:
    """The page's DOM after its scripts ran (and after ``script``, run once the page has loaded), no network."""
    if script:
        page.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>"))
    command = [
        browser, "--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
        "--proxy-server=127.0.0.1:9", "--window-size=1200,700", "--virtual-time-budget=5000", "--dump-dom",
        page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def cases(phantom):
    """The phantom's input meshes and a coarse reconstruction from its own exact SDF, as two viewer cases."""
    _, meshes, center, scale, grid = exact_reconstruction(*phantom, 40)
    recon = grid_meshes(grid, center, scale)
    walls = ((0, 2),)  # myocardium / left_ventricle touch in the phantom
    return [ViewerCase("p", "worst: p", meshes, recon, walls), ViewerCase("q", "best: q", meshes, meshes)]


def test_display_meshes_fit_the_budget_and_keep_the_shape(cases):
    big = max(cases[0].input, key=lambda m: m.n_faces)
    small = display_mesh(big, face_budget=big.n_faces // 4)
    assert 0 < small.n_faces <= big.n_faces // 4
    lo, hi = big.vertices.min(axis=0), big.vertices.max(axis=0)
    assert np.all(small.vertices.min(axis=0) >= lo - 1e-9) and np.all(small.vertices.max(axis=0) <= hi + 1e-9)
    assert np.ptp(small.vertices, axis=0).min() > 0.8 * np.ptp(big.vertices, axis=0).min()
    assert display_mesh(big, face_budget=big.n_faces) is big
    same_cell = cluster_vertices(big, 1e-6)
    assert same_cell.n_faces == big.n_faces, "cells finer than any edge change nothing"
    assert all(display_mesh(m).n_faces <= FACE_BUDGET for c in cases for m in c.input)


def test_3d_view_draws_every_structure_offline_in_a_real_browser(chromium, cases, tmp_path):
    names = list(DEFAULT_LABELS)
    page = tmp_path / "viewer.html"
    write_viewer(page, cases, names, structure_colours(len(names)), "run demo: 3D")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text, "nothing to fetch"
    dom = dom_after_load(chromium, page)
    assert 'data-drawn="1"' in dom, dom[-2000:]
    triangles = int(dom.split('data-triangles="')[1].split('"')[0])
    expected = sum(display_mesh(m).n_faces for m in cases[0].input + cases[0].reconstruction)
    assert triangles == expected
    painted = int(dom.split('data-painted="')[1].split('"')[0])
    assert painted > 0.05 * 1200 * 700, "the meshes cover part of the canvas"
    assert all(f"</span>{name}</label>" in dom for name in names), "a toggle per structure, named"
    assert "worst: p" in dom and "best: q" in dom
    # Hiding every structure but one draws only that one's triangles.
    hide = "document.querySelectorAll('#structures input').forEach((b, k) => { if (k) b.click(); });"
    dom = dom_after_load(chromium, page, hide)
    one = sum(display_mesh(side[0]).n_faces for side in (cases[0].input, cases[0].reconstruction))
    assert int(dom.split('data-triangles="')[1].split('"')[0]) == one
    # A shared wall from each side: the wall menu draws the pair's first structure, its button the second.
    wall = "{ const w = document.getElementById('wall'); w.value = '0,2'; w.dispatchEvent(new Event('change')); }"
    assert "wall myocardium / left_ventricle" in dom_after_load(chromium, page)
    dom = dom_after_load(chromium, page, wall)  # each script stays on the page: the next one runs after it
    assert int(dom.split('data-triangles="')[1].split('"')[0]) == one and "seen from left_ventricle" in dom
    dom = dom_after_load(chromium, page, "document.getElementById('side').click();")
    other = sum(display_mesh(side[2]).n_faces for side in (cases[0].input, cases[0].reconstruction))
    assert int(dom.split('data-triangles="')[1].split('"')[0]) == other and "seen from myocardium" in dom


def test_tables_page_shows_every_row_and_sorts_by_a_column(chromium, tmp_path):
    table = pd.DataFrame({"structure": ["aorta", "myocardium", "left_atrium"], "dice": [0.8, np.nan, 0.95]})
    page = tmp_path / "tables.html"
    colours = {"aorta": "rgb(1,2,3)"}
    write_tables_page(page, "run demo", [Section("Per structure", "what it shows", table)], colours)
    dom = dom_after_load(chromium, page, "document.querySelectorAll('th')[1].click();")
    body = dom.split("<tbody>")[1].split("</tbody>")[0]
    order = re.findall(r'<td class="text" data-value="([^"]*)"', body)
    assert order == ["aorta", "left_atrium", "myocardium"], "ascending Dice, the empty cell last"
    assert 'style="background:rgb(1,2,3)"' in dom.replace(": ", ":")
