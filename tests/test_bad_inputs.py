"""Bad inputs through the real workflow: one clear line per bad case, no partial outputs, the rest finish."""

from __future__ import annotations

import gzip
import json
import re
import shutil

import numpy as np
import pytest

from vecset.data.samples import load_samples

from conftest import DEFAULT_LABELS, nifti_bytes, small_phantom, write_nifti
from workflow_helpers import DOWNSTREAM, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow

# case id → (expected fragment of the one-line error)
REFUSED = {
    "truncated": "truncated gzip stream",
    "flipped": "corrupt gzip stream",
    "not_nifti": "not a NIfTI-1/NIfTI-2 image",
    "float_fractional": "non-integer values",
    "unknown_values": "label values [77] are not in the label map",
    "true_4d": "expected a 3-D label volume, got shape (56, 56, 48, 2)",
    "zooms_mismatch": "disagree with the affine's voxel sizes",
    "empty_mask": "mask is empty",
    "huge_claim": "voxels, more than mesh.max_voxels",
    "inflating": "gzip stream inflates past the",
}
ACCEPTED = ("good", "float_whole", "singleton_4d", "missing_structure")


def _write_fixtures(folder):
    volume, affine = small_phantom(7)
    good = nifti_bytes(volume, affine)
    write_nifti(folder / "good.nii.gz", volume, affine)
    (folder / "truncated.nii.gz").write_bytes(good[: len(good) * 2 // 3])
    flipped = bytearray(good)
    flipped[len(good) // 2 : len(good) // 2 + 8] = bytes(b ^ 0xFF for b in flipped[len(good) // 2 : len(good) // 2 + 8])
    (folder / "flipped.nii.gz").write_bytes(bytes(flipped))
    (folder / "not_nifti.nii.gz").write_bytes(b"patient,label\n1,2\n" * 30)
    write_nifti(folder / "float_whole.nii.gz", volume.astype(np.float32), affine)
    fractional = volume.astype(np.float32)
    fractional[volume == 3] = 3.4
    write_nifti(folder / "float_fractional.nii.gz", fractional, affine)
    unknown = volume.copy()
    unknown[volume == 9] = 77
    write_nifti(folder / "unknown_values.nii.gz", unknown, affine)
    write_nifti(folder / "singleton_4d.nii.gz", volume[..., None], affine)
    write_nifti(folder / "true_4d.nii.gz", np.stack([volume, volume], axis=-1), affine)
    header = bytearray(gzip.decompress(good))
    header[80:84] = np.float32(np.linalg.norm(affine[:3, 0]) * 2).tobytes()  # pixdim[1] doubled
    (folder / "zooms_mismatch.nii.gz").write_bytes(gzip.compress(bytes(header)))
    missing = volume.copy()
    missing[volume == DEFAULT_LABELS["left_atrial_appendage"]] = 0
    write_nifti(folder / "missing_structure.nii.gz", missing, affine)
    write_nifti(folder / "empty_mask.nii.gz", np.zeros_like(volume), affine)
    claim = bytearray(gzip.decompress(good)[:352])
    claim[42:48] = np.array([30000] * 3, dtype="<i2").tobytes()  # dim[1..3]: 27 T voxels from a 78-byte file
    (folder / "huge_claim.nii.gz").write_bytes(gzip.compress(bytes(claim)))
    (folder / "inflating.nii.gz").write_bytes(gzip.compress(gzip.decompress(good) + bytes(64 << 20), 1))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bad")
    _write_fixtures(workdir / "inputs")
    write_config(workdir, input_dir="inputs")
    proc = snakemake(workdir, "--cores", "2", "--keep-going", check=False)
    return workdir, proc


def test_run_fails_but_every_good_case_completes(run):
    workdir, proc = run
    assert proc.returncode != 0
    requests = set(re.findall(r"^(?:local)?rule mesh:\n(?:    .*\n)*?    resources: .*mem_mb=(\d+)", proc.stderr, re.M))
    assert requests == {"4000"}, "a header's claim must not raise any mesh job's memory request"
    for case in ACCEPTED:
        assert load_samples(workdir / f"results/samples/{case}.npz")["vol_sdf"].shape[1] == 10, case


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_case_gets_one_clear_line_and_no_outputs(run, case):
    workdir, proc = run
    log = (workdir / f"results/logs/mesh/{case}.log").read_text().strip().splitlines()
    line = log[-1]
    assert f"{case}: inputs/{case}.nii.gz: " in line and REFUSED[case] in line and "fix: " in line, line
    assert f"add '{case}' to 'exclude'" in line or "ignore_unknown_labels" in line
    assert line.split(" ERROR ", 1)[1] in proc.stderr  # the same line reaches the console
    assert not (workdir / f"results/meshes/{case}").exists() or not any((workdir / f"results/meshes/{case}").iterdir())
    assert not (workdir / f"results/samples/{case}.npz").exists()
    assert not list((workdir / "results").rglob(f".*{case}*.tmp"))


def test_missing_structure_is_marked_absent(run):
    workdir, _ = run
    qc = json.loads((workdir / "results/meshes/missing_structure/qc.json").read_text())
    assert qc["structures"]["left_atrial_appendage"]["present"] is False
    arrays = load_samples(workdir / "results/samples/missing_structure.npz")
    laa = list(DEFAULT_LABELS).index("left_atrial_appendage")
    assert not arrays["present"][laa] and arrays["present"].sum() == 9
    assert (
        "structures absent from the label map: left_atrial_appendage"
        in (workdir / "results/logs/mesh/missing_structure.log").read_text()
    )


def test_a_mesh_missing_from_its_case_folder_names_the_fix_that_works(run):
    """Snakemake sees a case's mesh folder, not a .ply missing inside it: the line says to delete the folder, and
    doing so rebuilds the case."""
    workdir, _ = run
    (workdir / "results/meshes/good/aorta.ply").unlink()
    (workdir / "results/samples/good.npz").unlink()
    failed = snakemake(workdir, "--cores", "1", "results/samples/good.npz", check=False)
    last = (workdir / "results/logs/sample/good.log").read_text().strip().splitlines()[-1]
    assert failed.returncode != 0 and "results/meshes/good/aorta.ply" in last, last
    assert "delete results/meshes/good and rerun the workflow" in last, last
    shutil.rmtree(workdir / "results/meshes/good")
    snakemake(workdir, "--cores", "1", "results/samples/good.npz")
    assert (workdir / "results/meshes/good/aorta.ply").exists() and (workdir / "results/samples/good.npz").exists()


def test_excluding_the_bad_cases_makes_the_run_succeed(run):
    workdir, _ = run
    write_config(workdir, input_dir="inputs", exclude=sorted(REFUSED))
    # Only the dataset-level steps are left: no good case is redone.
    assert planned_jobs(workdir) == {"all": 1} | DOWNSTREAM
    snakemake(workdir, "--cores", "2")
    excluded = [line.split(",")[0] for line in (workdir / "results/splits/excluded.csv").read_text().split("\n")]
    assert excluded == ["case", *sorted(REFUSED), ""]
    assert (workdir / "results/train/demo/checkpoint-best.pt").exists()
