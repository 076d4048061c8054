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
