"""Preprocessing benchmark: our route (label map → per-structure meshes in world mm → exact per-structure SDF)
against the seed's route (full-volume marching cubes in voxel space → trimesh surface samples → KD-tree SDF
with the sign of the nearest sample's normal), on procedural ten-structure phantoms.

Run from the repository root (about 3-4 minutes on 2 cores with the defaults)::

    python bench/preprocess.py            # 1 real-size + 3 demo-size cases, 1 thread
    python bench/preprocess.py --smoke    # CPU smoke run (tests/test_benches.py): 1 demo case, 2000 points, once

Every route of every case runs in a fresh spawned process, so each peak RSS is its own. Accuracy is measured on
a random subset of the query points against libigl's exact distance with the winding-number sign to our meshes.
The script also counts closed meshes and times a Snakemake dry run over 1000 symlinked cases. The last line:
`preprocess: ours <R>x the seed's time, sign agreement <S>% (seed <T>%), <K>/<N> meshes closed`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vecset.data.draws import case_rng
from vecset.data.label_image import LabelImage, map_labels
from vecset.data.mesh import Mesh, is_closed, mesh_classes
from vecset.data.mesh_distance import in_z_order
from vecset.data.phantom import STRUCTURES, make_phantom, write_phantom
from vecset.data.samples import SurfaceSampler, draw_queries, normalisation, per_class_sdf
from vecset.data.sdf import set_sdf_threads
from vecset.geometry import world_to_voxel
from vecset.settings import Config, NormalisationSettings, SampleSettings

from benchlib import planned_jobs
from seed_baseline import seed_mesh, seed_samples, seed_sdf

REPO = Path(__file__).resolve().parents[1]
LABELS = {name: i + 1 for i, name in enumerate(STRUCTURES)}
DEFAULTS = SampleSettings()
FIT = NormalisationSettings().fit
DEFAULT_POINTS = 100_000  # SDF queries per case in the recorded runs (the workflow's default is n_volume + n_near)
MB = 1e6
DRY_RUN_CASES = 1000
TARGETS = {
    "sdf_s": 6.0,
    "total_vs_seed": 0.5,  # our whole chain / the seed's route
    "thread_speedup": 1.7,  # SDF with 2 threads vs 1
    "peak_mb": 2000.0,
    "mc_s": 1.5,
    "sign_pct": 99.99,
    "err_norm": 1e-4,
    "dry_run_s": 10.0,
}

Metrics = dict[str, float]


# --- measuring ---------------------------------------------------------------------------------------------------


class Stopwatch:
    """Wall-clock seconds per named stage."""

    def __init__(self) -> None:
        self.times: Metrics = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (1e6 bytes).

    VmHWM belongs to the current address space, so a spawned child never reports its parent's peak (ru_maxrss
    can carry it across exec); ru_maxrss is the fallback where /proc is missing.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh spawned interpreter and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# --- cases --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseTask:
    """Everything a route process needs: files in ``work``, the grid and the query settings."""

    case_id: str
    size: str
    work: str
    affine: np.ndarray
    settings: SampleSettings
    seed: int  # the workflow's seed (config key seed), which seeds the sampling draws with the case id
    subset: np.ndarray  # indices of the reference subset among the query points
    threads: int

    def path(self, name: str) -> Path:
        return Path(self.work) / name


@dataclass
class RouteResult:
    times: Metrics
    peak_mb: float
    sdf_subset: np.ndarray  # (K, C) signed distances at the reference subset (mm ours, voxels seed), NaN if absent
    closed: int
    present: int
    scale: float = float("nan")
    extra: Metrics = field(default_factory=dict)  # not part of the route's total
    total_s: float = float("nan")  # the route's time: the sum of its stages (the median run's, once merged)

    def __post_init__(self) -> None:
        if np.isnan(self.total_s):
            self.total_s = sum(self.times.values())


def merged(runs: list[RouteResult]) -> RouteResult:
    """One route's repeated runs as one: every stage time and the total as medians over the runs, the first run's
    outputs and variants, the highest peak memory."""
    first = runs[0]
    times = {key: statistics.median(run.times[key] for run in runs) for key in first.times}
    total = statistics.median(run.total_s for run in runs)
    peak = max(run.peak_mb for run in runs)
    return RouteResult(times, peak, first.sdf_subset, first.closed, first.present, first.scale, first.extra, total)


@dataclass
class CaseResult:
    case_id: str
    size: str
    metrics: Metrics = field(default_factory=dict)


def query_settings(points: int) -> SampleSettings:
    """The config's sample settings with ``points`` SDF query points split evenly into volume and near points."""
    if points < 2:
        raise ValueError(f"--points must be >= 2, got {points}")
    return SampleSettings(n_volume=points // 2, n_near=points - points // 2)


def prepare_case(case_id: str, size: str, seed: int, args: argparse.Namespace, root: Path) -> tuple[CaseTask, float]:
    """Generate the phantom (timed), store it for the route processes, and pick the reference subset."""
    start = time.perf_counter()
    volume, affine = make_phantom(seed, LABELS, size)
    seconds = time.perf_counter() - start
    work = root / case_id
    work.mkdir()
    np.save(work / "volume.npy", volume)
    settings = query_settings(args.points)
    n_points = settings.n_volume + settings.n_near
    rng = np.random.default_rng([seed, 7])
    subset = np.sort(rng.choice(n_points, size=min(args.reference_subset, n_points), replace=False))
    return CaseTask(case_id, size, str(work), affine, settings, Config().seed, subset, args.threads), seconds


# --- our route ----------------------------------------------------------------------------------------------------


def query_points(
    meshes: list[Mesh], surface: SurfaceSampler, settings: SampleSettings, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Volume + near-surface query points in world mm and the case's scale, drawn by make_samples's own
    draw_queries."""
    center, scale = normalisation(meshes, FIT)
    vol, near = draw_queries(surface, center, scale, settings, rng)
    return np.concatenate([vol, near]) * scale + center, scale


def save_meshes(path: Path, meshes: list[Mesh]) -> None:
    arrays = {f"v{c}": m.vertices for c, m in enumerate(meshes)} | {f"f{c}": m.faces for c, m in enumerate(meshes)}
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub reads the kwargs as allow_pickle


def load_meshes(path: Path, n: int) -> list[Mesh]:
    with np.load(path) as npz:
        return [Mesh(npz[f"v{c}"], npz[f"f{c}"]) for c in range(n)]


def our_route(task: CaseTask, variants: bool = True) -> RouteResult:
    """The workflow's mesh + sample steps in memory, stage by stage (PLY write/read between the rules left out);
    with ``variants``, also the SDF with twice the threads and libigl's, on the same points."""
    set_sdf_threads(task.threads)
    volume = np.load(task.path("volume.npy"))
    rng = case_rng(task.seed, task.case_id)
    watch = Stopwatch()
    with watch.stage("label"):
        classes = map_labels(LabelImage(volume, task.affine, task.case_id), LABELS, task.case_id)
    with watch.stage("mc"):
        meshes, records = mesh_classes(classes, task.affine, len(LABELS))
    with watch.stage("surface"):
        surface = SurfaceSampler(meshes)
        surface.sample(task.settings.n_surface, rng)
    with watch.stage("query"):
        points, scale = query_points(meshes, surface, task.settings, rng)
    with watch.stage("kernels"):  # numba's compiled kernels, loaded from its cache once per process
        per_class_sdf(points[:1], [next(m for m in meshes if m.n_faces)], task.settings.sign)
    with watch.stage("sdf"):
        sdf = per_class_sdf(points, meshes, task.settings.sign, task.threads)
    peak = peak_rss_mb()
    save_meshes(task.path("meshes.npz"), meshes)
    np.save(task.path("points.npy"), points)
    result = RouteResult(
        times=watch.times,
        peak_mb=peak,
        sdf_subset=sdf[task.subset],
        closed=sum(r.closed for r in records),
        present=sum(r.present for r in records),
        scale=scale,
    )
    if variants:
        result.extra = variant_timings(task, points, meshes, sdf, watch.times["sdf"])
    return result


def variant_timings(task: CaseTask, points: np.ndarray, meshes: list[Mesh], sdf: np.ndarray, sdf_s: float) -> Metrics:
    """Our SDF with twice the threads (checked bit-identical), libigl's (checked equal) and the closed-mesh QC."""
    start = time.perf_counter()
    two = per_class_sdf(points, meshes, task.settings.sign, 2 * task.threads)
    sdf_doubled_s = time.perf_counter() - start
    if not np.array_equal(two, sdf, equal_nan=True):
        raise AssertionError(f"{task.case_id}: the SDF with {2 * task.threads} threads differs from {task.threads}")
    start = time.perf_counter()
    libigl = igl_sdf(points, meshes, task.settings.sign)
    libigl_s = time.perf_counter() - start
    start = time.perf_counter()
    for mesh in meshes:
        is_closed(mesh.faces)
    return {
        "qc_closed_s": time.perf_counter() - start,
        "sdf_doubled_s": sdf_doubled_s,
        "thread_speedup": sdf_s / sdf_doubled_s,
        "threads_doubled": 2.0 * task.threads,
        "libigl_sdf_s": libigl_s,
        "libigl_max_diff_mm": float(np.nanmax(np.abs(libigl - sdf))),
    }


# --- the seed's route (baseline: bench/seed_baseline.py) -------------------------------------------------------


def seed_route(task: CaseTask) -> RouteResult:
    """The research log's route, reimplemented only as the baseline; same query points as ours."""
    volume = np.load(task.path("volume.npy"))
    points_mm = np.load(task.path("points.npy"))
    watch = Stopwatch()
    with watch.stage("mc"):
        meshes = [seed_mesh(volume == value) for value in LABELS.values()]
    with watch.stage("surface"):
        clouds = seed_samples(meshes, task.settings.n_surface, task.seed)
    with watch.stage("sdf"):
        points_vox = world_to_voxel(points_mm, task.affine)
        sdf = np.stack([seed_sdf(points_vox, cloud, task.threads) for cloud in clouds], axis=1)
    return RouteResult(
        times=watch.times,
        peak_mb=peak_rss_mb(),
        sdf_subset=sdf[task.subset],
        closed=sum(m is not None and is_closed(m[1]) for m in meshes),
        present=sum(m is not None for m in meshes),
    )


# --- reference and accuracy ---------------------------------------------------------------------------------------


def igl_sdf(points: np.ndarray, meshes: list[Mesh], sign: str) -> np.ndarray:
    """(N, C) libigl signed distance per structure with the named sign type, called directly (independent of
    vecset.data.sdf, which is under test), in Z-order as the previous route called it; NaN for absent structures."""
    import igl

    sign_type = getattr(igl, f"SIGNED_DISTANCE_TYPE_{sign.upper()}")

    def per_structure(ordered: np.ndarray) -> np.ndarray:
        sdf = np.full((len(ordered), len(meshes)), np.nan)
        for c, mesh in enumerate(meshes):
            if mesh.n_faces:
                sdf[:, c] = igl.signed_distance(ordered, mesh.vertices, mesh.faces, sign_type=sign_type)[0]
        return sdf

    return in_z_order(points, per_structure)


def reference(task: CaseTask) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact distance with the winding-number sign at the subset, and our meshes with libigl's fast-winding-number
    sign (timed on all query points, returned at the subset)."""
    set_sdf_threads(task.threads)
    meshes = load_meshes(task.path("meshes.npz"), len(LABELS))
    points = np.load(task.path("points.npy"))
    exact = igl_sdf(points[task.subset], meshes, "winding_number")
    start = time.perf_counter()
    fwn = igl_sdf(points, meshes, "fast_winding_number")
    return exact, fwn[task.subset], time.perf_counter() - start


def accuracy(values_mm: np.ndarray, exact_mm: np.ndarray, band_mm: float, scale: float, prefix: str) -> Metrics:
    """Sign agreement (%) overall and within ``band_mm`` of the surface, mean |error| in normalised units."""
    present = ~np.isnan(exact_mm)
    values, exact = values_mm[present], exact_mm[present]
    agree = (values < 0) == (exact < 0)
    near = np.abs(exact) <= band_mm
    return {
        f"{prefix}sign_pct": 100.0 * agree.mean(),
        f"{prefix}sign_near_pct": 100.0 * agree[near].mean() if near.any() else float("nan"),
        f"{prefix}mismatches": float((~agree).sum()),
        f"{prefix}err_norm": float(np.abs(values - exact).mean() / scale),
    }


def route_metrics(result: RouteResult, prefix: str, queries: int) -> Metrics:
    times = {f"{prefix}{k}_s": v for k, v in result.times.items()}
    times |= {f"{prefix}{k}": v for k, v in result.extra.items()}
    sdf_s = result.times["sdf"]
    return times | {
        f"{prefix}total_s": result.total_s,
        f"{prefix}queries_per_s": queries * result.present / sdf_s,
        f"{prefix}points_per_s": queries / sdf_s,
        f"{prefix}peak_mb": result.peak_mb,
        f"{prefix}closed": float(result.closed),
        f"{prefix}present": float(result.present),
    }


def run_case(case_id: str, size: str, seed: int, args: argparse.Namespace, root: Path) -> CaseResult:
    task, phantom_s = prepare_case(case_id, size, seed, args, root)
    queries = task.settings.n_volume + task.settings.n_near
    ours_runs, seed_runs = [], []
    for repeat in range(args.repeats):  # alternating, each in a fresh process: both see the same machine load
        log(f"{case_id}: phantom {phantom_s:.1f} s; our route, run {repeat + 1} of {args.repeats} …")
        ours_runs.append(isolated(our_route, task, repeat == 0))
        log(f"{case_id}: ours {ours_runs[-1].total_s:.1f} s; seed route …")
        seed_runs.append(isolated(seed_route, task))
        log(f"{case_id}: seed {seed_runs[-1].total_s:.1f} s")
    ours, baseline = merged(ours_runs), merged(seed_runs)
    log(f"{case_id}: medians ours {ours.total_s:.1f} s, seed {baseline.total_s:.1f} s; exact reference …")
    exact, fwn, fwn_s = isolated(reference, task)
    voxel_sizes = np.linalg.norm(task.affine[:3, :3], axis=0)
    band, mean_voxel = float(voxel_sizes.max()), float(voxel_sizes.mean())
    metrics = {"phantom_s": phantom_s, "fwn_sdf_s": fwn_s, "band_mm": band, "subset": float(len(task.subset))}
    metrics |= route_metrics(ours, "ours_", queries) | route_metrics(baseline, "seed_", queries)
    metrics |= accuracy(ours.sdf_subset, exact, band, ours.scale, "ours_")
    metrics |= accuracy(fwn, exact, band, ours.scale, "fwn_")
    metrics |= accuracy(baseline.sdf_subset * mean_voxel, exact, band, ours.scale, "seed_")
    shutil.rmtree(task.work)
    return CaseResult(case_id, size, metrics)


# --- workflow dry run ---------------------------------------------------------------------------------------------


def snakemake_command(root: Path, config: Path, quiet: list[str]) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    program = str(exe) if exe.exists() else (shutil.which("snakemake") or "snakemake")
    paths = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(root), "--configfile", str(config)]
    return [program, "-n", *quiet, *paths]


def dry_run(n_cases: int, repeats: int = 2) -> tuple[list[float], int]:
    """Seconds of ``snakemake -n --quiet`` over ``n_cases`` symlinks to one demo phantom, and the job count."""
    with tempfile.TemporaryDirectory(prefix="vecset-dryrun-") as tmp:
        root = Path(tmp)
        phantom = root / "phantom.nii.gz"
        write_phantom(phantom, 0, LABELS, "demo")
        inputs = root / "inputs"
        inputs.mkdir()
        for i in range(n_cases):
            (inputs / f"case_{i:04d}.nii.gz").symlink_to(phantom)
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump({"input_dir": str(inputs), "labels": LABELS}, sort_keys=False))
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(snakemake_command(root, config, ["--quiet"]), cwd=root, check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
        command = snakemake_command(root, config, [])
        counted = subprocess.run(command, cwd=root, check=True, capture_output=True, text=True)
        return seconds, sum(planned_jobs(counted.stdout + counted.stderr).values())


# --- report -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    key: str  # metric key without the route prefix
    fmt: str
    target: float | None = None
    higher_is_better: bool = False  # direction of the target and of the ratio
    beat_seed: bool = False  # the target also asks ours to beat the seed
    ratio: bool = True  # print seed/ours (ours/seed for rates)
    real_only: bool = True  # the target is set for the real-size case only
    seed_ratio: bool = False  # the target bounds ours / seed instead of ours


ROWS = (
    Row("label mapping (s)", "label_s", ".2f"),
    Row("marching cubes, all structures (s)", "mc_s", ".2f", TARGETS["mc_s"]),
    Row("  of which closed-mesh QC, re-timed (s)", "qc_closed_s", ".2f", ratio=False),
    Row("surface sampling (s)", "surface_s", ".2f"),
    Row("query points (s)", "query_s", ".2f"),
    Row("SDF kernels, loaded once per process (s)", "kernels_s", ".2f"),
    Row("per-structure SDF (s)", "sdf_s", ".2f", TARGETS["sdf_s"], beat_seed=True),
    Row("total preprocessing (s)", "total_s", ".2f", TARGETS["total_vs_seed"], seed_ratio=True),
    Row("SDF queries/s (point x structure)", "queries_per_s", ",.0f", higher_is_better=True),
    Row("SDF points/s (all structures)", "points_per_s", ",.0f", higher_is_better=True),
    Row("peak RSS (MB)", "peak_mb", ",.0f", TARGETS["peak_mb"]),
    Row("sign agreement, all (%)", "sign_pct", ".4f", TARGETS["sign_pct"], True, ratio=False, real_only=False),
    Row("sign agreement, |d| <= 1 voxel (%)", "sign_near_pct", ".4f", TARGETS["sign_pct"], True, False, False, False),
    Row("sign mismatches (count)", "mismatches", ".0f", ratio=False),
    Row("mean |error| (normalised)", "err_norm", ".2e", TARGETS["err_norm"], ratio=False, real_only=False),
)


def median(cases: list[CaseResult], key: str) -> float:
    values = [c.metrics[key] for c in cases if key in c.metrics]
    return statistics.median(values) if values else float("nan")


def cell(value: float, fmt: str) -> str:
    return "—" if np.isnan(value) else format(value, fmt)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    return "yes" if (value >= target if higher_is_better else value <= target) else "MISSED"


def target_cells(row: Row, size: str, ours: float, seed: float) -> list[str]:
    """The target as text and whether ours meets it ('' where no target is set for this size)."""
    if size != "real" and row.real_only:
        return ["", ""]
    parts, met = [], True
    if row.target is not None and row.seed_ratio:
        parts.append(f"<= {row.target:g} x seed")
        met = ours <= row.target * seed
    elif row.target is not None:
        parts.append(f"{'>=' if row.higher_is_better else '<='} {format(row.target, row.fmt)}")
        met = verdict(ours, row.target, row.higher_is_better) == "yes"
    if row.beat_seed:
        parts.append("< seed")
        met = met and ours < seed
    return [" and ".join(parts), ("yes" if met else "MISSED") if parts else ""]


def size_rows(size: str, cases: list[CaseResult]) -> list[list[str]]:
    rows = [["phantom generation, not preprocessing (s)", size, cell(median(cases, "phantom_s"), ".2f")] + [""] * 4]
    for row in ROWS:
        ours, seed = median(cases, f"ours_{row.key}"), median(cases, f"seed_{row.key}")
        ratio = (ours / seed if row.higher_is_better else seed / ours) if row.ratio else float("nan")
        speed_up = "" if np.isnan(ratio) else f"{ratio:.1f}x"
        rows.append([row.metric, size, cell(ours, row.fmt), cell(seed, row.fmt), speed_up])
        rows[-1] += target_cells(row, size, ours, seed)
    rows += variant_rows(size, cases)
    rows.append(["closed meshes (all cases)", size, *closed_cells(cases), "", "", ""])
    return rows


def closed_cells(cases: list[CaseResult]) -> list[str]:
    def count(route: str) -> str:
        closed = int(sum(c.metrics[f"{route}_closed"] for c in cases))
        present = int(sum(c.metrics[f"{route}_present"] for c in cases))
        return f"{closed}/{present}"

    return [count("ours"), count("seed")]


def variant_rows(size: str, cases: list[CaseResult]) -> list[list[str]]:
    """Our SDF with twice the threads, libigl's AABB tree (the previous route, kept as the tests' reference) on the
    same points, and libigl's fast-winding-number sign instead of the pseudonormal: times and accuracy."""
    speedup = median(cases, "ours_thread_speedup")
    threads = f"{median(cases, 'ours_threads_doubled'):.0f} threads"
    target = TARGETS["thread_speedup"]
    rows = [
        [f"  same SDF with {threads} (s)", size, cell(median(cases, "ours_sdf_doubled_s"), ".2f"), "", "", "", ""],
        [
            f"  speed-up with {threads}",
            size,
            f"{speedup:.2f}x",
            "",
            "",
            f">= {target}x",
            verdict(speedup, target, True),
        ],
        ["  previous route, libigl AABB tree: SDF (s)", size, cell(median(cases, "ours_libigl_sdf_s"), ".2f")]
        + [""] * 4,
        ["  previous route: max |difference| (mm)", size, cell(median(cases, "ours_libigl_max_diff_mm"), ".1e")]
        + [""] * 4,
        ["  variant fast winding number: SDF (s)", size, cell(median(cases, "fwn_sdf_s"), ".2f"), "", "", "", ""],
    ]
    if size != "real":
        rows[1][5:] = ["", ""]
    for key, label, fmt in (("sign_pct", "sign all (%)", ".4f"), ("sign_near_pct", "sign <= 1 voxel (%)", ".4f")):
        value = median(cases, f"fwn_{key}")
        rows.append([f"  variant fast winding number: {label}", size, cell(value, fmt), "", "", "", ""])
    value = median(cases, "fwn_err_norm")
    rows.append(["  variant fast winding number: mean |error|", size, cell(value, ".2e"), "", "", "", ""])
    return rows


def format_table(rows: list[list[str]]) -> str:
    header = ["metric", "size", "ours", "seed", "speed-up", "target", "met"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        numbers = [c.rjust(w) for c, w in zip(r[2:], widths[2:], strict=True)]
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), *numbers]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def report(
    results: list[CaseResult], dry_seconds: list[float], jobs: int, args: argparse.Namespace, idle_mb: float
) -> str:
    rows: list[list[str]] = []
    sizes = [s for s in ("real", "demo") if any(c.size == s for c in results)]
    for size in sizes:
        rows += size_rows(size, [c for c in results if c.size == size])
    if dry_seconds:
        dry = statistics.median(dry_seconds)
        runs = ", ".join(f"{s:.2f}" for s in dry_seconds)
        target = TARGETS["dry_run_s"]
        label = f"dry run, {DRY_RUN_CASES} cases (s; runs {runs})"
        rows.append([label, "demo", f"{dry:.2f}", "", "", f"<= {target:.2f}", verdict(dry, target, False)])
        rows.append(["dry run, jobs in the DAG", "demo", str(jobs), "", "", "", ""])
    counts = {s: sum(c.size == s for c in results) for s in sizes}
    subset = int(max(c.metrics["subset"] for c in results)) if results else 0
    notes = [
        f"cases: {', '.join(f'{n} {s}' for s, n in counts.items())}; each route run {args.repeats} times per case, "
        "alternating, each run in a fresh process; times are medians over the runs, then over the cases of a size; "
        f"{args.points} query points per case, {DEFAULTS.n_surface} surface samples, {args.threads} thread(s).",
        "speed-up = seed / ours for times and memory, ours / seed for rates (> 1: ours is better).",
        "seed label mapping is '—': its per-structure masks (volume == value) are made inside its marching cubes.",
        "ours total = label mapping + marching cubes + surface sampling + query points + SDF kernel load + SDF (the "
        "workflow's mesh and sample steps in memory, no PLY I/O); seed total = marching cubes + sampling + SDF on the "
        "same query points.",
        "SDF: vecset.data.mesh_distance (numba; the kernels' first compile, about 7 s, is cached on disk and not "
        "timed). Twice the threads: the same call, same process, results checked bit-identical. Previous route: "
        "libigl.signed_distance per structure in Z-order, as vecset.data.sdf called it before; max |difference| "
        "against ours over all query points.",
        f"accuracy: {subset} random query points x present structures, against libigl's exact distance with the "
        "winding-number sign to our world-mm meshes; '1 voxel' = |reference| <= the largest voxel edge.",
        "seed accuracy: query points mapped to voxel space; its sign compared as is, its voxel-unit distance "
        "converted to mm by the mean voxel size (voxels are anisotropic, so part of its error is that conversion).",
        "normalised = mm / the case's scale (vecset.data.samples.normalisation); peak RSS = VmHWM of a fresh process "
        f"per route, interpreter + imports included (about {idle_mb:.0f} MB idle).",
        "ours marching cubes = vecset.data.mesh.mesh_classes with its QC (components, volumes, closedness); the "
        "'of which' row re-runs is_closed on the same meshes after the stage (not added to the total).",
        "seed meshes: level 0.5 on the full volume, faces turned outward by the sign of the enclosed volume (so its "
        "sign is not penalised for a winding convention); its surface samples are shared among structures by area.",
        "fast-winding-number variant: libigl's FAST_WINDING_NUMBER sign on our meshes, called directly (not offered by "
        "vecset.data.sdf), timed on all query points; its distances are not exact, hence its small mean |error|.",
        "closed meshes: vecset.data.mesh.is_closed on every present structure's mesh, summed over the cases of a size.",
    ]
    wrapped = [textwrap.fill(n, width=116, initial_indent="- ", subsequent_indent="  ") for n in notes]
    return format_table(rows) + "\n\nnotes:\n" + "\n".join(wrapped)


# --- main ---------------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, default=1, help="real-size (512x512x256) cases (default 1)")
    parser.add_argument("--demo", type=int, default=3, help="demo-size (96x96x80) cases (default 3)")
    default_points = DEFAULT_POINTS
    parser.add_argument("--points", type=int, default=default_points, help=f"SDF queries per case ({default_points})")
    parser.add_argument("--threads", type=int, default=1, help="threads per route (default 1: targets are per core)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each route per case, alternating; medians (default 3)"
    )
    parser.add_argument("--reference-subset", type=int, default=20_000, help="query points checked against the exact")
    parser.add_argument("--skip-dry-run", action="store_true", help=f"skip the {DRY_RUN_CASES}-case Snakemake dry run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: 1 demo case, 2000 points, once, no dry run")
    args = parser.parse_args(argv)
    if args.smoke:
        args.real, args.demo, args.points, args.repeats, args.reference_subset = 0, 1, 2000, 1, 500
        args.skip_dry_run = True
    return args


def result_line(results: list[CaseResult]) -> str:
    """The benchmark's figure: our whole chain against the seed's (median ratio over cases), sign agreement with
    the exact reference, closed meshes."""
    ratio = statistics.median(c.metrics["ours_total_s"] / c.metrics["seed_total_s"] for c in results)
    closed = sum(int(c.metrics["ours_closed"]) for c in results)
    present = sum(int(c.metrics["ours_present"]) for c in results)
    return (
        f"preprocess: ours {ratio:.2f}x the seed's time, sign agreement {median(results, 'ours_sign_pct'):.4f}% "
        f"(seed {median(results, 'seed_sign_pct'):.2f}%), {closed}/{present} meshes closed"
    )


def limit_threads(threads: int) -> None:
    """Pin every thread pool the route processes may use (they inherit the environment when spawned)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    set_sdf_threads(threads)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    limit_threads(args.threads)
    idle_mb = float("nan") if args.smoke else isolated(peak_rss_mb)
    cases = [(f"real_{i:03d}", "real", i) for i in range(args.real)] + [
        (f"demo_{i:03d}", "demo", i) for i in range(args.demo)
    ]
    with tempfile.TemporaryDirectory(prefix="vecset-bench-") as tmp:
        results = [run_case(case_id, size, seed, args, Path(tmp)) for case_id, size, seed in cases]
    dry_seconds, jobs = ([], 0) if args.skip_dry_run else dry_run(DRY_RUN_CASES)
    print(report(results, dry_seconds, jobs, args, idle_mb))
    print(result_line(results))


if __name__ == "__main__":
    main()
