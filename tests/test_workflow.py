"""The workflow end to end through Snakemake's command line: job graph, outputs, partial reruns, lint."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from vecset.data.mesh import is_closed
from vecset.data.ply import read_ply
from vecset.data.samples import load_samples
from vecset.data.split import read_split_csv
from vecset.settings import EvalSettings

from conftest import DEFAULT_LABELS, REPO, ply_comments, small_phantom, write_nifti
from workflow_helpers import (
    DOWNSTREAM,
    FAST_SAMPLES,
    FAST_TRAIN,
    oracle_jobs,
    planned_cases,
    planned_jobs,
    snakemake,
    write_config,
)

pytestmark = pytest.mark.workflow
CASES = ("case_a", "case_b", "case_c")


def _write_cases(input_dir, seeds):
    for case, seed in seeds.items():
        volume, affine = small_phantom(seed)
        write_nifti(input_dir / f"{case}.nii.gz", volume, affine)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A workdir whose three cases have been run through the whole workflow."""
    workdir = tmp_path_factory.mktemp("wf")
    _write_cases(workdir / "inputs", dict(zip(CASES, (1, 2, 3), strict=True)))
    write_config(workdir, input_dir="inputs")
    assert planned_jobs(workdir) == {"all": 1, "mesh": 3, "sample": 3} | DOWNSTREAM | oracle_jobs(CASES)
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture
def copy_of_done(done, tmp_path):
    """A private copy (mtimes and Snakemake metadata kept) so each rerun test starts from the finished state."""
    workdir = tmp_path / "wf"
    shutil.copytree(done, workdir, symlinks=True)
    write_config(workdir, input_dir="inputs")
    return workdir


def test_outputs_are_valid_meshes_and_samples(done):
    for case in CASES:
        qc = __import__("json").loads((done / f"results/meshes/{case}/qc.json").read_text())
        assert qc["case"] == case and qc["class_names"] == list(DEFAULT_LABELS)
        for name, record in qc["structures"].items():
            ply = done / f"results/meshes/{case}/{name}.ply"
            _vertices, faces = read_ply(ply)
            assert f"structure {name}" in ply_comments(ply)
            if record["present"]:
                assert record["closed"] and is_closed(faces) and len(faces) == record["triangles"]
        arrays = load_samples(done / f"results/samples/{case}.npz")
        assert arrays["vol_sdf"].shape == (FAST_SAMPLES["n_volume"], 10)
        assert arrays["present"].sum() >= 9
        assert np.isfinite(arrays["vol_sdf"][:, arrays["present"]]).all()
        for log in ("mesh", "sample"):
            assert (done / f"results/logs/{log}/{case}.log").stat().st_size > 0
            assert (done / f"results/benchmarks/{log}/{case}.tsv").exists()


def test_split_and_training_outputs(done):
    train = read_split_csv(done / "results/splits/train.csv")
    val = read_split_csv(done / "results/splits/val.csv")
    assert sorted(c for c, _ in train + val) == list(CASES) and val and train
    assert all(path == (done / f"results/samples/{case}.npz").resolve() for case, path in train + val)
    run = done / "results/train/demo"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all("val_mean_iou" in r for r in records)
    state = torch.load(run / "checkpoint-last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["run_name"] == "demo" and state["class_names"] == list(DEFAULT_LABELS)
    assert torch.load(run / "checkpoint-best.pt", weights_only=True)["best_metric"] >= 0
    assert (run / "state" / "last.pt").exists(), "resumable state stays beside the declared outputs"
    assert re.search(r"epoch 2 step \d+/\d+ train_loss=", (done / "results/logs/train/demo.log").read_text())


def test_evaluation_outputs(done):
    import nibabel as nib

    val = [case for case, _ in read_split_csv(done / "results/splits/val.csv")]
    rows = pd.read_csv(done / "results/eval/demo/metrics.csv")
    assert sorted(set(rows["case"])) == val and len(rows) == 10 * len(val)
    assert set(rows["status"]) <= {"ok", "missed", "extra", "absent"}
    summary = pd.read_csv(done / "results/eval/demo/summary.csv")
    assert list(summary["structure"]) == list(DEFAULT_LABELS) and "dice_mean" in summary
    assert rows.loc[rows["structure"] == "coronary_arteries", "cldice"].notna().all()
    assert rows.loc[rows["structure"] == "aorta", "cldice"].isna().all(), "clDice only for eval.tubular"
    oracle = pd.concat([pd.read_csv(done / f"results/oracle/{case}/metrics.csv") for case in val])
    assert sorted(set(oracle["case"])) == val and sorted(p.name for p in (done / "results/oracle").iterdir()) == val
    ceiling = oracle.groupby("structure", sort=False)["dice"].mean()
    oracle_means = summary.set_index("structure")["dice_oracle_mean"]
    np.testing.assert_allclose(oracle_means, ceiling[list(DEFAULT_LABELS)], atol=1e-4)  # the CSVs keep 4 decimals
    walls = pd.read_csv(done / "results/eval/demo/interfaces.csv")
    assert sorted(set(walls["case"])) == val and (walls["wall_mm3"] > 0).all()
    assert ("myocardium", "left_ventricle") in set(zip(walls["structure_a"], walls["structure_b"], strict=True))
    pairs = pd.read_csv(done / "results/eval/demo/interface_summary.csv")
    assert {"overlap_mm3_mean", "gap_fraction_mean", "overlap_mm3_oracle_mean"} <= set(pairs.columns)
    # One evaluate run scores the encoder's latent sets beside the fitted ones, and the oracle beside both.
    assert {"status_encoder", "dice_encoder", "hd95_mm_encoder", "cldice_encoder"} <= set(rows.columns)
    assert {"dice_encoder_mean", "dice_encoder_median", "hd95_mm_encoder_mean"} <= set(summary.columns)
    scores = pd.read_csv(done / "results/eval/demo/scores.csv")
    assert list(scores.columns[1:4]) == ["Dice encoder", "Dice fitted", "Dice oracle"]
    worst = pd.read_csv(done / "results/eval/demo/walls.csv")
    assert list(worst.columns) == ["pair", "overlap %", "gap %", "oracle overlap %", "oracle gap %"]
    assert 0 < len(worst) <= 5 and worst[["overlap %", "gap %"]].max(axis=1).is_monotonic_decreasing
    log = (done / "results/logs/evaluate/demo.log").read_text()
    assert "encoder latent sets:" in log and "fitted latent sets:" in log
    for case in val:
        assert (done / f"results/eval/demo/cases/{case}/labels.itksnap.txt").exists()
        assert (done / f"results/eval/demo/cases/{case}/labels.ctbl").exists()
    for case in val:
        written = nib.load(done / f"results/eval/demo/cases/{case}/labels.nii.gz")
        source = nib.load(done / f"inputs/{case}.nii.gz")
        assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert "mean Dice over" in (done / "results/logs/evaluate/demo.log").read_text()
    for figure in ("training_curves", "dice_hd95", "slices"):
        assert (done / f"results/eval/demo/plots/{figure}.png").read_bytes().startswith(b"\x89PNG")
    for page in ("tables", "viewer"):
        assert (done / f"results/eval/demo/{page}.html").read_text().startswith("<!doctype html>")
    drawn = (done / "results/logs/plots/demo.log").read_text().split("slices and 3D view drawn for ")[1].split()
    assert sorted(c.rstrip(",") for c in drawn) == val, "3 cases asked, the 2 validation cases drawn"


def test_report_holds_figures_and_per_structure_dice_of_every_val_case(done, tmp_path):
    import base64
    import re

    report = tmp_path / "report.html"
    snakemake(done, "--report", str(report))
    html = report.read_text()
    figures = ("training_curves.png", "dice_hd95.png", "slices.png")
    assert all(name in html for name in figures)
    assert html.count("data:image/png;") == len(figures), "each figure embedded once"
    assert "Training of run <tt" in html and "worst, median and best mean Dice" in html, "captions rendered"
    # The landing page: encoder | fitted | oracle per structure, and what each is.
    assert "Run demo: mean over the validation cases" in html and "Dice encoder" in html and "Dice oracle" in html
    assert "fitted to the case" in html
    assert "Run demo: the worst shared walls" in html and "oracle overlap %" in html, "the walls table too"
    tables = dict(re.findall(r"data:text/csv;charset=utf8;filename=(\w+\.csv);base64,([A-Za-z0-9+/=]+)", html))
    metrics = base64.b64decode(tables["metrics.csv"]).decode()
    val = [case for case, _ in read_split_csv(done / "results/splits/val.csv")]
    for case in val:
        dice_rows = [line for line in metrics.splitlines() if line.startswith(f"{case},")]
        assert [row.split(",")[1] for row in dice_rows] == list(DEFAULT_LABELS)
    assert base64.b64decode(tables["summary.csv"]).decode().startswith("structure,cases,absent,dice_mean")
    pages = dict(re.findall(r"data:text/html;charset=utf8;filename=(\w+\.html);base64,([A-Za-z0-9+/=]+)", html))
    assert sorted(pages) == ["tables.html", "viewer.html"], "the tables and the 3D view shown in the report"
    assert "Per structure" in base64.b64decode(pages["tables.html"]).decode()
    assert "VIEWER_DATA" in base64.b64decode(pages["viewer.html"]).decode()
    # The evaluate job's block lists the validation cases' label maps, not every case's.
    block = re.search(r'"evaluate", "wildcards": "run=demo", "params": "label_paths=\{([^}]*)\}', html)
    assert block and sorted(re.findall(r"'([\w-]+)': ", block.group(1))) == val


def test_latents_of_every_case_decode_back_to_meshes(done, tmp_path):
    from vecset.eval.latents import main as latents_main

    latents = sorted(p for p in (done / "results/latents/demo").glob("*.npz") if p.name != "stats.npz")
    assert [p.stem for p in latents] == list(CASES)
    with np.load(latents[0]) as npz:
        assert str(npz["case"]) == CASES[0] and npz["z"].shape == (8, 16)  # 8 latents × 16 bottleneck channels
        assert str(npz["checkpoint"]) == "results/train/demo/checkpoint-best.pt" and int(npz["epoch"]) in (1, 2)
        assert int(npz["fit_steps"]) == EvalSettings().fit_steps  # stored as evaluate decodes them: fitted
        assert npz["z_encoder"].shape == npz["z"].shape  # and the encoder's own, for a generative model to choose
        assert 0 <= float(npz["share_beyond_3sd"]) <= 1 and float(npz["relative_change"]) >= 0
    drift = pd.read_csv(done / "results/latents/demo/drift.csv")
    assert sorted(drift["case"]) == list(CASES) and set(drift["split"]) == {"train", "val"}
    assert int(np.load(done / "results/latents/demo/stats.npz")["n_cases"]) == (drift["split"] == "train").sum()
    best = done / "results/train/demo/checkpoint-best.pt"
    assert latents_main(["decode", "--latent", str(latents[0]), "--checkpoint", str(best),
                         "--out", str(tmp_path / "mesh"), "--resolution", "16"]) == 0  # fmt: skip
    assert sorted(p.stem for p in (tmp_path / "mesh").glob("*.ply")) == sorted(DEFAULT_LABELS)
    # Another checkpoint of the same model (one more epoch recorded): same weights, another file, refused.
    other = tmp_path / "other.pt"
    state = torch.load(best, weights_only=True)
    torch.save(state | {"epoch": state["epoch"] + 1}, other)
    assert latents_main(["decode", "--latent", str(latents[0]), "--checkpoint", str(other),
                         "--out", str(tmp_path / "x")]) == 1  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_finished_workflow_has_nothing_to_do(done):
    assert planned_jobs(done) == {}


def test_changed_case_content_reruns_only_that_case(copy_of_done):
    _write_cases(copy_of_done / "inputs", {"case_b": 42})
    expected = {"all": 1, "mesh": 1, "sample": 1} | DOWNSTREAM | oracle_jobs(CASES, ["case_b"], CASES)
    assert planned_jobs(copy_of_done) == expected
    assert planned_cases(copy_of_done, "mesh") == ["case_b"]


def test_added_case_adds_only_its_jobs(copy_of_done):
    _write_cases(copy_of_done / "inputs", {"case_d": 4})
    expected = {"all": 1, "mesh": 1, "sample": 1} | DOWNSTREAM | oracle_jobs([*CASES, "case_d"], ["case_d"], CASES)
    assert planned_jobs(copy_of_done) == expected
    assert planned_cases(copy_of_done, "sample") == ["case_d"]


def test_sampling_parameter_reruns_sampling_not_meshing(copy_of_done):
    write_config(copy_of_done, input_dir="inputs", samples={**FAST_SAMPLES, "n_volume": 2500})
    assert planned_jobs(copy_of_done) == {"all": 1, "sample": 3} | DOWNSTREAM | oracle_jobs(CASES, CASES, CASES)


def test_training_setting_reruns_only_training_through_the_run_plan(copy_of_done):
    plan = copy_of_done / "results/train/demo/settings.json"
    written = json.loads(plan.read_text())
    assert written["train"]["lr"] == FAST_TRAIN.get("lr", 3e-3) and written["class_names"] == list(DEFAULT_LABELS)
    n_train = len(read_split_csv(copy_of_done / "results/splits/train.csv"))
    steps = -(-n_train // FAST_TRAIN["batch_size"])  # one rank: ceil(cases / batch) per epoch
    costs = {"parameters": 0, "flops_per_sample": 0, "checkpoint_bytes": 0}
    assert written["data"]["train_cases"] == n_train and written["implied"] | costs == costs | {
        "nodes": 1, "ranks_per_node": 1, "world_size": 1, "rank_device": "cpu", "loader_workers_per_rank": 0,
        "torch_threads_per_rank": 1, "effective_batch": FAST_TRAIN["batch_size"], "steps_per_epoch": steps,
        "total_steps": steps * FAST_TRAIN["epochs"]}  # fmt: skip
    assert 10_000 < written["implied"]["parameters"] < 200_000
    assert written["implied"]["checkpoint_bytes"] == 16 * written["implied"]["parameters"]
    write_config(copy_of_done, input_dir="inputs", train={**FAST_TRAIN, "lr": 5e-4})
    assert planned_jobs(copy_of_done) == {"all": 1, "plan": 1, "train": 1, "evaluate": 1, "plots": 1, "encode": 1}
    # The dry run says why: the plan's parameters changed, so training's input (the plan) is updated.
    reasons = snakemake(copy_of_done, "-n").stdout
    assert re.search(r"rule plan:\n(.+\n)*?\s+reason: Params have changed since last execution", reasons)
    assert re.search(r"rule train:\n(.+\n)*?\s+reason: Input files updated by another job: .*settings\.json", reasons)
    assert planned_jobs(copy_of_done, "--until", "split") == {}
    snakemake(copy_of_done, "--cores", "2", "--until", "plan")
    assert json.loads(plan.read_text())["train"]["lr"] == 5e-4


def test_deleted_sample_is_rebuilt_and_excluded_case_dropped(copy_of_done):
    (copy_of_done / "results/samples/case_a.npz").unlink()
    assert planned_cases(copy_of_done, "sample") == ["case_a"]
    write_config(copy_of_done, input_dir="inputs", exclude=["case_a"])
    assert planned_jobs(copy_of_done) == {"all": 1} | DOWNSTREAM | oracle_jobs(CASES[1:], before=CASES)


def test_demo_data_run_from_shipped_config(tmp_path):
    """The quick-start path: no input_dir → the demo_case rule writes phantoms, then mesh and sample."""
    config = (REPO / "config/config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(config)
    args = (
        "--config",
        "demo={n_cases: 2}",
        "samples={n_surface: 2000, n_volume: 1000, n_near: 1000}",
        "train={epochs: 1, model: {width: 32, depth: 1, dim_head: 16, n_latents: 8}, wandb: {mode: disabled}, "
        "items: {n_input: 256, n_vol: 200, n_near: 100, n_surface_loss: 50, n_val_vol: 500}}",
        "eval={resolution: 16}",
    )
    expected = {"all": 1, "demo_case": 2, "mesh": 2, "sample": 2} | DOWNSTREAM | oracle_jobs(["demo_000", "demo_001"])
    assert planned_jobs(tmp_path, *args) == expected
    snakemake(tmp_path, "--cores", "2", *args)
    for case in ("demo_000", "demo_001"):
        assert (tmp_path / f"results/demo/{case}.nii.gz").exists()
        assert load_samples(tmp_path / f"results/samples/{case}.npz")["present"].all()
    assert (tmp_path / "results/train/demo/checkpoint-best.pt").exists()
    assert (tmp_path / "results/eval/demo/summary.csv").exists()


def test_invalid_config_stops_with_the_key_named(tmp_path):
    write_config(tmp_path, samples={"n_volum": 10})
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "config key 'samples': Additional properties are not allowed ('n_volum' was unexpected)" in (
        proc.stdout + proc.stderr
    )


def test_missing_input_dir_is_named(tmp_path):
    write_config(tmp_path, input_dir=str(tmp_path / "nowhere"))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr + proc.stdout


def test_lint_and_format_are_clean():
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    for cmd in (
        ["snakefmt", "--check", "Snakefile", "rules"],
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
    ):
        proc = subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}{proc.stderr}"


def test_preempted_train_job_resumes_on_the_next_run(copy_of_done):
    """SIGUSR1 to the rule's job (as SLURM's --signal=USR1@T sends) → ranks save and the job fails; the next
    snakemake run resumes the same run from its state instead of starting over."""
    write_config(copy_of_done, input_dir="inputs", train={**FAST_TRAIN, "epochs": 400, "lr": 5e-4})
    state = copy_of_done / "results/train/demo/state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
         str(copy_of_done), "--configfile", str(copy_of_done / "config.yaml"), "--cores", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (state / "metrics.jsonl").exists() or "is from other settings or data" not in _train_log(copy_of_done):
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    wrapper = subprocess.run(
        ["pgrep", "-f", f"{copy_of_done}/.snakemake/scripts/.*train.py"], capture_output=True, text=True
    ).stdout.split()
    assert len(wrapper) == 1, wrapper
    os.kill(int(wrapper[0]), signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert "stop requested" in _train_log(copy_of_done)
    saved = torch.load(state / "last.pt", weights_only=True)
    assert 0 < saved["epoch"] < 400
    assert not (copy_of_done / "results/train/demo/checkpoint-last.pt").exists()
    snakemake(copy_of_done, "--cores", "1")
    assert f"epoch {saved['epoch']}, step {saved['step']}" in _train_log(copy_of_done)
    assert torch.load(copy_of_done / "results/train/demo/checkpoint-last.pt", weights_only=True)["epoch"] == 400


def test_killed_workflow_stops_its_trainer_and_a_rerun_resumes(copy_of_done):
    """kill -9 of Snakemake mid-training: the job's supervisor sees the workflow gone and stops the trainer,
    which saves first; it never trains on beside a restarted workflow, and --unlock plus a rerun resume."""
    write_config(copy_of_done, input_dir="inputs", train={**FAST_TRAIN, "epochs": 400, "lr": 5e-4})
    state = copy_of_done / "results/train/demo/state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
         str(copy_of_done), "--configfile", str(copy_of_done / "config.yaml"), "--cores", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (state / "metrics.jsonl").exists() or "is from other settings or data" not in _train_log(copy_of_done):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    supervisor = ["pgrep", "-f", f"{copy_of_done}/.snakemake/scripts/.*train.py"]  # it waits for torchrun
    assert subprocess.run(supervisor, capture_output=True).returncode == 0, "the job should outlive Snakemake"
    deadline = time.time() + 60
    while subprocess.run(supervisor, capture_output=True).returncode == 0:
        assert time.time() < deadline, "the trainer outlived its workflow"
        time.sleep(0.5)
    log = _train_log(copy_of_done)
    assert "the workflow process that ran this job is gone" in log and "stop requested" in log, log[-2000:]
    saved = torch.load(state / "last.pt", weights_only=True)
    snakemake(copy_of_done, "--unlock")
    snakemake(copy_of_done, "--cores", "1", "--rerun-incomplete")
    assert f"epoch {saved['epoch']}, step {saved['step']}" in _train_log(copy_of_done)
    assert torch.load(copy_of_done / "results/train/demo/checkpoint-last.pt", weights_only=True)["epoch"] == 400


def _train_log(workdir) -> str:
    path = workdir / "results/logs/train/demo.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize("given_in", ["--config", "a later --configfile"])
def test_label_map_from_the_command_line_replaces_the_configured_one(tmp_path, given_in):
    """A label map in `--config 'labels={...}'` or in a later `--configfile` (the README's own-data command) is the
    whole map: Snakemake would merge it into config.yaml's ten."""
    write_config(tmp_path, demo={"n_cases": 1}, labels=dict(DEFAULT_LABELS))
    if given_in == "--config":
        given = ["--config", "labels={myocardium: 1, left_ventricle: 3}"]
    else:
        (tmp_path / "my.yaml").write_text("labels: {myocardium: 1, left_ventricle: 3}\n")
        given = ["--configfile", str(tmp_path / "config.yaml"), str(tmp_path / "my.yaml")]
    snakemake(tmp_path, "--cores", "1", "--until", "mesh", *given)
    folder = tmp_path / "results/meshes/demo_000"
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))  # .snakemake_timestamp
    assert files == ["left_ventricle.ply", "myocardium.ply", "qc.json"]
    assert json.loads((folder / "qc.json").read_text())["class_names"] == ["myocardium", "left_ventricle"]


def test_stray_entries_in_input_dir_are_skipped_with_a_warning_and_odd_ids_work(tmp_path):
    """One bad entry used to stop every case: a dangling link, a file in a subfolder, braces in a name, a
    name too long for the derived files, a name ending in a part repeated 20 times (Snakemake refuses the whole
    DAG over it). Each is skipped with a warning on the console and in the run's log, and listed with its reason
    in excluded.csv; a non-ASCII id is a fine case."""
    inputs = tmp_path / "inputs"
    _write_cases(inputs, {"case_a": 1, "café": 2})
    (inputs / "broken.nii.gz").symlink_to(inputs / "nowhere.nii.gz")
    (inputs / "sub").mkdir()
    _write_cases(inputs / "sub", {"case_x": 3})
    for name in ("odd{1}.nii.gz", "x" * 240 + ".nii.gz", "case_upper.NII.GZ", "case_" + "ab" * 20 + ".nii.gz"):
        shutil.copy(inputs / "case_a.nii.gz", inputs / name)
    write_config(tmp_path, input_dir="inputs", exclude=["case_gone"])
    done = snakemake(tmp_path, "--cores", "2", "--until", "split")
    run_log = next((tmp_path / ".snakemake" / "log").glob("*.log")).read_text()
    for warning in ("skipped: inputs/broken.nii.gz: not a readable file", "skipped: inputs/sub/case_x.nii.gz: ",
                    "skipped: inputs/odd{1}.nii.gz: ", "bytes; file names made from it would pass 255",
                    "ends in 'ab' repeated 20 times or more, which Snakemake refuses",
                    "do not match input_pattern '{case}.nii.gz' (not used): ['case_upper.NII.GZ']",
                    "'exclude' names cases that are not in the input: ['case_gone']"):  # fmt: skip
        assert warning in done.stderr and warning in run_log, (warning, done.stderr[-3000:])
    with open(tmp_path / "results/splits/excluded.csv", newline="") as handle:
        excluded = {row["case"]: row["reason"] for row in csv.DictReader(handle)}
    assert {"broken", "sub/case_x", "odd{1}", "x" * 240, "case_" + "ab" * 20, "case_gone"} <= set(excluded), excluded
    assert excluded["broken"].startswith("inputs/broken.nii.gz: not a readable file")
    assert sorted(p.name for p in (tmp_path / "results/samples").glob("*.npz")) == ["café.npz", "case_a.npz"]
    assert "case café" in " ".join(ply_comments(tmp_path / "results/meshes/café/aorta.ply"))


def test_mesh_memory_request_follows_the_largest_label_image(tmp_path):
    """The headers alone size the request: with a 1024×1024×512 float64 volume (4.3 GB raw) among the cases,
    every mesh job asks for its 22 GB (one request per rule, as SLURM array tasks share one), where a run of
    small images asks for the 4 GB floor (a 629 MB label file once needed 6.2 GB against a fixed 4 GB)."""
    import gzip

    import nibabel as nib

    inputs = tmp_path / "inputs"
    _write_cases(inputs, {"small": 1})
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 512))
    header.set_data_dtype(np.float64)
    (inputs / "huge.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))  # header only
    write_config(tmp_path, input_dir="inputs")
    dry = snakemake(tmp_path, "-n", "--until", "mesh").stdout
    requests = dict(re.findall(r"wildcards: case=(\w+)\n.*?mem_mb=(\d+)", dry, flags=re.DOTALL))
    huge = str(1000 + 5 * 1024 * 1024 * 512 * 8 // 10**6)
    assert requests == {"huge": huge, "small": huge}, requests
    (inputs / "huge.nii.gz").unlink()
    dry = snakemake(tmp_path, "-n", "--until", "mesh").stdout
    assert dict(re.findall(r"wildcards: case=(\w+)\n.*?mem_mb=(\d+)", dry, flags=re.DOTALL)) == {"small": "4000"}
