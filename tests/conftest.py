"""Shared fixtures: small real NIfTI phantoms and helpers that write label maps the way users' files look."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vecset.data.label_image import nifti_bytes, write_label_image
from vecset.data.phantom import STRUCTURES, make_phantom

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABELS = {name: i + 1 for i, name in enumerate(STRUCTURES)}
SMALL_SHAPE = (56, 56, 48)  # same field of view as the demo, coarser voxels: fast but every structure present


__all__ = ["nifti_bytes"]  # the package's writer, for tests that corrupt or edit NIfTI bytes


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` as a label NIfTI with the package's one writer; returns ``path``."""
    write_label_image(path, data, affine)
    return path


def ply_comments(path: Path) -> list[str]:
    """The ``comment`` lines of a PLY header, without the keyword."""
    header = path.read_bytes().split(b"end_header\n", 1)[0].decode("utf-8")
    return [line.removeprefix("comment ") for line in header.splitlines() if line.startswith("comment ")]


def small_phantom(seed: int = 0, labels: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    return make_phantom(seed, labels or DEFAULT_LABELS, "demo", shape=SMALL_SHAPE)


@pytest.fixture(scope="session")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """(label volume, affine) of a small oblique, anisotropic phantom with all ten structures."""
    return small_phantom(0)


TRAIN_SAMPLES = {"n_surface": 4000, "n_volume": 3000, "n_near": 3000}


def write_sample_file(path: Path, seed: int, labels: dict[str, int] | None = None) -> Path:
    """A real sample npz of a small phantom: meshes in world mm, exact per-structure SDF, small counts."""
    from vecset.data.draws import case_rng
    from vecset.data.label_image import LabelImage, map_labels
    from vecset.data.mesh import mesh_classes
    from vecset.data.samples import make_samples, save_samples
    from vecset.settings import SampleSettings

    labels = labels or DEFAULT_LABELS
    volume, affine = small_phantom(seed, labels)
    case = path.stem
    classes = map_labels(LabelImage(volume, affine, case), labels, case)
    meshes, _ = mesh_classes(classes, affine, len(labels))
    settings = SampleSettings(**TRAIN_SAMPLES)
    arrays = make_samples(
        meshes, list(labels), affine, volume.shape, settings, 0.9, case_rng(seed, case), case_id=case, source="phantom"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_samples(path, arrays)
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """Six real sample files (case_0..case_5) plus train.csv (4 cases) and val.csv (2 cases)."""
    from vecset.data.split import write_split_csv
    from vecset.settings import SplitSettings

    root = tmp_path_factory.mktemp("samples")
    paths = {f"case_{i}": write_sample_file(root / "samples" / f"case_{i}.npz", seed=i) for i in range(6)}
    settings = SplitSettings()
    write_split_csv(root / "splits" / "train.csv", [f"case_{i}" for i in range(4)], paths, settings, 0)
    write_split_csv(root / "splits" / "val.csv", ["case_4", "case_5"], paths, settings, 0)
    return root


def exact_reconstruction(volume: np.ndarray, affine: np.ndarray, resolution: int):
    """A label volume's classes, meshes, normalisation and its own exact SDF decoded densely on a ``resolution``³
    grid: what a perfect model would hand to the evaluation."""
    from vecset.data.label_image import LabelImage, map_labels
    from vecset.data.mesh import mesh_classes
    from vecset.data.samples import normalisation, per_class_sdf
    from vecset.eval.decode import decode_dense, numpy_sdf

    classes = map_labels(LabelImage(volume, affine, "exact"), DEFAULT_LABELS, "exact")
    meshes, _ = mesh_classes(classes, affine, len(DEFAULT_LABELS))
    center, scale = normalisation(meshes, 0.9)
    sdf = numpy_sdf(lambda p: per_class_sdf(p * scale + center, meshes, "pseudonormal") / scale)
    return classes, meshes, center, scale, decode_dense(sdf, resolution).values


@pytest.fixture(scope="session")
def val_label_maps(sample_dir, tmp_path_factory) -> dict[str, str]:
    """The sample_dir validation cases' label maps (case_i was made from small_phantom(i)), one folder."""
    from vecset.data.split import read_split_csv

    folder = tmp_path_factory.mktemp("labels")
    seeds = {case: int(case.split("_")[1]) for case, _ in read_split_csv(sample_dir / "splits" / "val.csv")}
    return {case: str(write_nifti(folder / f"{case}.nii.gz", *small_phantom(seed))) for case, seed in seeds.items()}


@pytest.fixture(scope="session")
def trained_run(sample_dir, tmp_path_factory) -> Path:
    """The run folder (checkpoint-best.pt, settings.json) of the tiny test model after 200 optimizer steps on the
    test cases (about 20 s on one core)."""
    from training_helpers import TINY_TRAIN, run_training

    run_dir = tmp_path_factory.mktemp("decode") / "run"
    done = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 100, "val_every_steps": 200})
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def trained_model(trained_run):
    """The trained tiny test model (trained_run's best checkpoint) and its plan."""
    from vecset.model.checkpoint import load_model
    from vecset.plan import RunPlan

    model, _ = load_model(trained_run / "checkpoint-best.pt")
    return model, RunPlan.read(trained_run / "settings.json")


def _skip_without_slurm() -> None:
    if os.geteuid() != 0 and shutil.which("sinfo") is None:
        pytest.skip("SLURM tests need root to install slurm-wlm and munge and start slurmctld/slurmd")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("SLURM tests need Debian's apt-get to install slurm-wlm and munge")


def _start_cluster(*args: str) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "tests/slurm/start_cluster.sh"), *args], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, f"could not start SLURM:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM cluster, started by tests/slurm/start_cluster.sh if needed."""
    _skip_without_slurm()
    _start_cluster()


TWO_NODE_CONF = "/run/vecset-slurm2/etc/slurm.conf"


@pytest.fixture(scope="module")
def two_node_cluster():
    """A two-node SLURM cluster (start_cluster.sh --nodes 2: nodes vn1 and vn2, each in its own network namespace),
    its slurm.conf path yielded (clients need SLURM_CONF); torn down afterwards, whatever the tests did."""
    if os.geteuid() != 0:
        pytest.skip("the two-node SLURM tests need root (network namespaces, a bridge, daemons)")
    _skip_without_slurm()
    try:
        _start_cluster("--nodes", "2")
        yield TWO_NODE_CONF
    finally:
        down = subprocess.run(
            ["bash", str(REPO / "tests/slurm/two_nodes.sh"), "down"], capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, f"two-node cluster teardown failed:\n{down.stdout}\n{down.stderr}"
