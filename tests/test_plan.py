"""A run's plan (settings.json): what a run's settings imply, written once and read back unchanged."""

from __future__ import annotations

import json

import pytest

from vecset.config import ConfigError, load_run, read_config_files, resolve_runs, validate_config
from vecset.plan import RunPlan, make_plan, steps_per_epoch
from vecset.train.state import fingerprint

from conftest import DEFAULT_LABELS, REPO

# Upstream VecSetX has no decoder feed-forward (decoder_ff: true would add 12.7 M), nor has the config's default.
REAL_JOB = {"preset": "upstream", "model": {"decoder_ff": False}, "batch_size": 16, "resources": {"gpus": 4}}


def test_the_real_job_is_thirteen_steps_an_epoch_of_a_425m_model_on_four_gpus():
    run = resolve_runs(validate_config({"runs": {"big": REAL_JOB}}))["big"]
    plan = make_plan(run, 0, list(DEFAULT_LABELS), train_cases=800, val_cases=200)
    implied = plan.implied()
    assert implied["world_size"] == 4 and implied["effective_batch"] == 64
    assert implied["steps_per_epoch"] == 13 and implied["total_steps"] == 13 * plan.train.epochs
    assert abs(implied["parameters"] - 425.1e6) / 425.1e6 < 0.01


@pytest.mark.parametrize(
    ("cases", "world", "batch", "accum", "steps"),
    [(800, 4, 16, 1, 13), (4, 2, 1, 2, 1), (5, 2, 1, 2, 2), (30, 1, 4, 1, 8), (1, 8, 4, 4, 1)],
)
def test_steps_per_epoch_counts_what_a_distributed_sampler_hands_each_rank(cases, world, batch, accum, steps):
    assert steps_per_epoch(cases, world, batch, accum) == steps


def test_plan_file_round_trips_and_a_changed_setting_changes_its_content(tmp_path):
    config = validate_config({"runs": {"demo": {}, "other": {"lr": 5e-4, "items": {"rotate_deg": 10.0}}}})
    runs = resolve_runs(config)
    plans = {name: make_plan(run, 0, list(DEFAULT_LABELS), 32, 8) for name, run in runs.items()}
    path = tmp_path / "settings.json"
    path.write_text(plans["demo"].to_json())
    assert RunPlan.read(path) == plans["demo"]
    written = json.loads(path.read_text())
    assert written["class_names"] == list(DEFAULT_LABELS) and written["model"]["n_classes"] == 10
    assert written["train"]["model"] == {"bottleneck": "none", "decoder_ff": False}
    assert written["model"]["bottleneck"] == "none" and written["model"]["width"] == 128  # the preset, resolved
    other = json.loads(plans["other"].to_json())
    assert {k for k in written if written[k] != other[k]} == {"run", "train", "sha256"}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda text: "", "unreadable run plan (JSONDecodeError)"),
        (lambda text: "[]", "not a run plan of format 1"),
        (lambda text: text.replace('"format": 1', '"format": 0'), "not a run plan of format 1"),
        (lambda text: text.replace('"lr": 0.003', '"lr": 0.3'), "changed since the plan rule wrote it"),
    ],
)
def test_an_emptied_or_hand_edited_plan_is_refused_with_the_fix(tmp_path, change, says):
    """The plan is what every run job reads of the config: an emptied one or one edited by hand is never used."""
    run = resolve_runs(validate_config({"runs": {"demo": {}}}))["demo"]
    path = tmp_path / "settings.json"
    path.write_text(change(make_plan(run, 0, list(DEFAULT_LABELS), 32, 8).to_json()))
    with pytest.raises(ValueError) as info:
        RunPlan.read(path)
    assert says in str(info.value) and "delete it and rerun the workflow" in str(info.value)
    assert "\n" not in str(info.value)


def test_train_seed_overrides_the_top_level_seed_and_naming_that_seed_keeps_the_fingerprint():
    """Runs that differ only in train.seed train on the same cases and split with other draws; a run that names
    the top-level seed is the same run as one that leaves train.seed null, so its state still resumes."""
    runs = resolve_runs(validate_config({"runs": {"demo": {}, "same": {"seed": 7}, "other": {"seed": 3}}}))
    plans = {name: make_plan(run, 7, list(DEFAULT_LABELS), 32, 8) for name, run in runs.items()}
    assert {name: plan.seed for name, plan in plans.items()} == {"demo": 7, "same": 7, "other": 3}
    prints = {name: fingerprint(plan, []) for name, plan in plans.items()}
    assert prints["same"] == prints["demo"] != prints["other"]


def test_production_run_implies_the_sizes_its_comments_state():
    """config/imagecas.yaml on config.yaml for ImageCAS's 800 + 200 cases: VecSetX's 425 M model, 13 steps of
    effective batch 64 per epoch, 200 000 steps, a 7 GB state, and no demo run."""
    runs = resolve_runs(read_config_files(REPO / "config/config.yaml", REPO / "config/imagecas.yaml"))
    assert list(runs) == ["imagecas"]
    plan = make_plan(runs["imagecas"], 0, list(DEFAULT_LABELS), 800, 200)
    assert round(plan.parameters / 1e6, 1) == 425.2
    implied = plan.implied()
    assert (implied["world_size"], implied["effective_batch"], implied["steps_per_epoch"]) == (4, 64, 13)
    assert implied["total_steps"] == 200_000 and 6.5e9 < implied["checkpoint_bytes"] < 7.5e9
    assert 3.0e12 < implied["flops_per_sample"] < 3.6e12
    assert plan.train.loader_workers(gpu=True) == 6 and plan.train.torch_threads(gpu=True) == 2
    # What num_workers: null resolves to is in the plan file, for a user to read before the job starts.
    assert (implied["rank_device"], implied["loader_workers_per_rank"], implied["torch_threads_per_rank"]) == (
        "cuda",
        6,
        2,
    )


def test_the_plan_says_what_null_num_workers_resolves_to_on_cpu_ranks_and_when_set():
    """CPU ranks compute with their threads and build items in-process; a set num_workers is taken as it is."""
    runs = resolve_runs(validate_config({"runs": {"cpu": {}, "set": {"num_workers": 3, "resources": {"gpus": 1}}}}))
    cpu, fixed = (make_plan(runs[name], 0, list(DEFAULT_LABELS), 8, 2).implied() for name in ("cpu", "set"))
    assert (cpu["rank_device"], cpu["loader_workers_per_rank"], cpu["torch_threads_per_rank"]) == ("cpu", 0, 2)
    assert (fixed["rank_device"], fixed["loader_workers_per_rank"], fixed["torch_threads_per_rank"]) == ("cuda", 3, 1)


def test_a_run_is_loaded_from_config_files_as_the_workflow_merges_them_with_overrides_key_by_key():
    """load_run is how tools outside the workflow (benchmarks) take a configured run: imagecas.yaml on config.yaml,
    an override of one nested key keeps the run's other keys of that section."""
    files = [REPO / "config/config.yaml", REPO / "config/imagecas.yaml"]
    run = load_run(files, "imagecas", {"batch_size": 2, "items": {"n_input": 16}})
    assert (run.name, run.train.preset, run.train.batch_size) == ("imagecas", "upstream", 2)
    assert (run.train.items.n_input, run.train.items.n_vol, run.train.resources.gpus) == (16, 1024, 4)
    with pytest.raises(ConfigError, match=r"no run 'demo' in .*imagecas.yaml; its runs: \['imagecas'\]"):
        load_run(files, "demo")
