"""Real training through the command line: 2-rank CPU DDP under torchrun, SIGTERM + resume, NaN stop, wandb."""

from __future__ import annotations

import itertools
import signal
import subprocess

import numpy as np
import pytest
import torch

from vecset.config import ConfigError, validate_config
from vecset.data.samples import load_samples
from vecset.data.split import read_split_csv, write_split_csv
from vecset.model.checkpoint import load_model
from vecset.preemption import PREEMPTED_EXIT
from vecset.settings import SplitSettings

from training_helpers import TINY_TRAIN, metrics, run_training, train_command, train_env


def test_two_rank_ddp_trains_with_ranks_in_step_and_logs_offline(sample_dir, tmp_path):
    run_dir = tmp_path / "ddp"
    # Batch 1 with 2 accumulation steps: each optimizer step syncs gradients once over two micro-batches.
    settings = TINY_TRAIN | {"epochs": 2, "batch_size": 1, "accum_steps": 2, "wandb": {"mode": "offline"}}
    done = run_training(sample_dir, run_dir, settings | {"tensorboard": True}, ranks=2)
    assert done.returncode == 0, done.stderr[-3000:]
    records = metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    # 4 training cases over 2 ranks, 2 micro-batches of 1 per step: one optimizer step per epoch.
    assert records[-1]["step"] == 2
    assert all(r["ddp_weight_spread"] == 0.0 for r in records)
    assert all(0.0 <= r["val_mean_iou"] <= 1.0 for r in records)
    for name in ("checkpoint-best.pt", "checkpoint-last.pt", "metrics.jsonl"):
        assert (run_dir / name).stat().st_size > 0
    state = torch.load(run_dir / "checkpoint-last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2 and state["model_config"]["width"] == 32
    assert list(run_dir.glob("state/wandb/offline-run-*")), "wandb offline run folder missing"
    assert list(run_dir.glob("state/tensorboard/events.out.tfevents.*"))
    model, _ = load_model(run_dir / "checkpoint-best.pt")
    assert model.config.n_classes == 10


def test_a_plan_for_another_world_size_is_refused(sample_dir, tmp_path):
    """The plan's steps per epoch and lr schedule assume its ranks; torchrun with others is named, not trained."""
    refused = run_training(sample_dir, tmp_path / "world", TINY_TRAIN | {"epochs": 1}, ranks=2, planned_ranks=1)
    assert refused.returncode != 0
    assert "is planned for 1 rank(s) (1 node(s) × 1), but torchrun started 2" in refused.stderr
    assert not (tmp_path / "world" / "state" / "last.pt").exists()


def test_sigterm_mid_run_saves_and_a_rerun_resumes_to_the_same_end(sample_dir, tmp_path):
    run_dir = tmp_path / "resume"
    settings = TINY_TRAIN | {"epochs": 6, "batch_size": 1, "val_every": 3}  # 4 steps per epoch
    proc = subprocess.Popen(
        train_command(sample_dir, run_dir, settings), stderr=subprocess.PIPE, text=True, env=train_env()
    )
    lines = []
    for line in proc.stderr:  # stop once the first epoch is logged: the second is under way
        lines.append(line)
        if "epoch 1/6" in line:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=120) == PREEMPTED_EXIT, "".join(lines)[-3000:]
    assert "stop requested" in "".join(lines)
    saved = torch.load(run_dir / "state" / "last.pt", weights_only=True)
    assert saved["step"] >= 4 and saved["step"] == 4 * saved["epoch"] + saved["batch_in_epoch"]
    assert not (run_dir / "checkpoint-last.pt").exists(), "declared outputs appear only when training ends"

    resumed = run_training(sample_dir, run_dir, settings)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run_dir / 'state' / 'last.pt'}: epoch {saved['epoch']}, step {saved['step']}" in (
        resumed.stderr
    )
    final = torch.load(run_dir / "checkpoint-last.pt", weights_only=True)
    assert final["epoch"] == 6 and final["step"] == 24, "no step lost or repeated across the stop"
    assert final["settings"] == saved["settings"]
    assert [r["epoch"] for r in metrics(run_dir)] == list(range(1, 7))


def test_finished_run_rerun_only_rewrites_outputs_and_changed_settings_start_fresh(sample_dir, tmp_path):
    run_dir = tmp_path / "again"
    assert run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1}).returncode == 0
    (run_dir / "checkpoint-last.pt").unlink()
    again = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1})
    assert again.returncode == 0 and (run_dir / "checkpoint-last.pt").exists()
    assert "resumed from" in again.stderr and len(metrics(run_dir)) == 1
    changed = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1, "lr": 5e-4})
    assert changed.returncode == 0 and "starting fresh" in changed.stderr
    assert (run_dir / "state" / "previous" / "last.pt").exists()


def test_nan_loss_stops_with_a_message_naming_the_step(sample_dir, tmp_path):
    cases = read_split_csv(sample_dir / "splits" / "train.csv")
    bad_dir = tmp_path / "bad"
    arrays = load_samples(cases[0][1])
    arrays["near_points"][:] = np.nan
    bad = bad_dir / "samples" / "case_0.npz"
    bad.parent.mkdir(parents=True)
    np.savez(bad, **arrays)
    paths = {"case_0": bad} | {c: p for c, p in read_split_csv(sample_dir / "splits" / "val.csv")}
    write_split_csv(bad_dir / "splits" / "train.csv", ["case_0"], paths, SplitSettings(), 0)
    write_split_csv(bad_dir / "splits" / "val.csv", ["case_4"], paths, SplitSettings(), 0)
    failed = run_training(bad_dir, tmp_path / "nan", TINY_TRAIN)
    assert failed.returncode == 1
    assert "loss became nan at epoch 0, step 0" in failed.stderr
    assert not (tmp_path / "nan" / "checkpoint-last.pt").exists()


@pytest.mark.parametrize("key", ["api_key", "key"])
@pytest.mark.parametrize("where", ["train", "runs"])
def test_wandb_key_in_config_is_refused(key, where):
    wandb = {"wandb": {"mode": "online", key: "secret"}}
    config = {"train": wandb} if where == "train" else {"runs": {"demo": wandb}}
    with pytest.raises(ConfigError, match=rf"'{where}(\.demo)?\.wandb\.{key}': .*export WANDB_API_KEY"):
        validate_config(config)


def test_learning_rate_schedule_warms_up_then_decays():
    from vecset.settings import TrainSettings
    from vecset.train.loop import lr_at

    s = TrainSettings(lr=1e-3, min_lr=1e-5, warmup_steps=10)
    lrs = [lr_at(step, 100, s) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_sample_cache_is_automatic_only_for_small_datasets(sample_dir, monkeypatch):
    import vecset.model.items as items

    cases = read_split_csv(sample_dir / "splits" / "train.csv")
    assert items.cache_decision("auto", cases) and not items.cache_decision("never", cases)
    monkeypatch.setattr(items, "CACHE_AUTO_BYTES", 1000)
    assert not items.cache_decision("auto", cases) and items.cache_decision("always", cases)
