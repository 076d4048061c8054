"""Shared fixtures: small real NIfTI phantoms and helpers that write label maps the way users' files look."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vecset.data.phantom import STRUCTURES, make_phantom

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABELS = {name: i + 1 for i, name in enumerate(STRUCTURES)}
SMALL_SHAPE = (56, 56, 48)  # same field of view as the demo, coarser voxels: fast but every structure present


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """Gzip-compressed NIfTI-1 bytes of ``data`` with ``affine`` as sform and qform."""
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return gzip.compress(img.to_bytes())


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(nifti_bytes(data, affine))
    return path


def small_phantom(seed: int = 0, labels: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    return make_phantom(seed, labels or DEFAULT_LABELS, "demo", shape=SMALL_SHAPE)


@pytest.fixture(scope="session")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """(label volume, affine) of a small oblique, anisotropic phantom with all ten structures."""
    return small_phantom(0)


TRAIN_SAMPLES = {"n_surface": 4000, "n_volume": 3000, "n_near": 3000}


def write_sample_file(path: Path, seed: int, labels: dict[str, int] | None = None) -> Path:
    """A real sample npz of a small phantom: meshes in world mm, exact per-structure SDF, small counts."""
    from vecset.data.label_image import LabelImage, map_labels
    from vecset.data.mesh import mesh_classes
    from vecset.data.samples import SampleSettings, case_rng, make_samples, save_samples

    labels = labels or DEFAULT_LABELS
    volume, affine = small_phantom(seed, labels)
    case = path.stem
    classes = map_labels(LabelImage(volume, affine, case), labels, case)
    meshes, _ = mesh_classes(classes, affine, len(labels))
    settings = SampleSettings(**TRAIN_SAMPLES, seed=seed)
    arrays = make_samples(meshes, list(labels), affine, volume.shape, settings, case_rng(seed, case))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_samples(path, arrays)
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """Six real sample files (case_0..case_5) plus train.csv (4 cases) and val.csv (2 cases)."""
    from vecset.data.split import SplitSettings, write_split_csv

    root = tmp_path_factory.mktemp("samples")
    paths = {f"case_{i}": write_sample_file(root / "samples" / f"case_{i}.npz", seed=i) for i in range(6)}
    settings = SplitSettings()
    write_split_csv(root / "splits" / "train.csv", [f"case_{i}" for i in range(4)], paths, settings)
    write_split_csv(root / "splits" / "val.csv", ["case_4", "case_5"], paths, settings)
    return root
