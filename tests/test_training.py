"""Real training through the command line: 2-rank CPU DDP under torchrun, SIGTERM + resume, NaN stop, wandb."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vecset.config import ConfigError, resolve_runs, validate_config
from vecset.data.samples import load_samples
from vecset.data.split import read_split_csv, write_split_csv
from vecset.model.checkpoint import load_model
from vecset.plan import make_plan
from vecset.preemption import PREEMPTED_EXIT
from vecset.settings import SplitSettings
from vecset.train.state import RunState

from training_helpers import TINY_TRAIN, metrics, run_training, train_command, train_env


@pytest.mark.workflow
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


@pytest.mark.workflow
def test_a_plan_for_another_world_size_is_refused(sample_dir, tmp_path):
    """The plan's steps per epoch and lr schedule assume its ranks; torchrun with others is named, not trained."""
    refused = run_training(sample_dir, tmp_path / "world", TINY_TRAIN | {"epochs": 1}, ranks=2, planned_ranks=1)
    assert refused.returncode != 0
    assert "is planned for 1 rank(s) (1 node(s) × 1), but torchrun started 2" in refused.stderr
    assert not (tmp_path / "world" / "state" / "last.pt").exists()


@pytest.mark.workflow
def test_sigterm_mid_run_saves_and_a_rerun_resumes_to_the_same_end(sample_dir, tmp_path):
    run_dir = tmp_path / "resume"
    settings = TINY_TRAIN | {"epochs": 6, "batch_size": 1, "val_every_steps": 12}  # 4 steps per epoch
    proc = subprocess.Popen(
        train_command(sample_dir, run_dir, settings), stderr=subprocess.PIPE, text=True, env=train_env()
    )
    lines = []
    for line in proc.stderr:  # stop once the first epoch is logged: the second is under way
        lines.append(line)
        if "epoch 1 step 4/24" in line:
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


def kept(run_dir: Path) -> dict[str, dict]:
    """Each kept state's record (kept.json), by folder name."""
    return {f.parent.name: json.loads(f.read_text()) for f in (run_dir / "state" / "previous").glob("*/kept.json")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.workflow
def test_finished_run_rerun_only_rewrites_outputs_and_changed_settings_start_fresh(sample_dir, tmp_path):
    run_dir = tmp_path / "again"
    assert run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1}).returncode == 0
    logged = metrics(run_dir)
    (run_dir / "checkpoint-last.pt").unlink()
    (run_dir / ".checkpoint-last.pt.k1ll3d.tmp").write_bytes(b"x" * 1000)  # a copy killed mid-way
    again = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1})
    assert again.returncode == 0 and (run_dir / "checkpoint-last.pt").exists()
    assert not list(run_dir.glob(".*.tmp")) and "beside the run's outputs" in again.stderr
    assert "resumed from" in again.stderr and metrics(run_dir) == logged, "a finished run trains no further"
    first = torch.load(run_dir / "state" / "last.pt", weights_only=True)["fingerprint"]
    changed = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1, "lr": 5e-4})
    assert changed.returncode == 0 and "starting fresh" in changed.stderr
    (name, record), *_ = kept(run_dir).items()
    assert record["fingerprint"] == first and record["step"] == 2 and record["label"] == "lr=0.003", record
    assert "-step2-lr=0.003" in name, "the folder says when, where and what differed"
    assert "1 kept state(s)" in changed.stderr and "(train.keep_states: 2)" in changed.stderr
    # Changed back: the first state comes back from its kept folder and is resumed, nothing retrained.
    back = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1})
    assert back.returncode == 0 and "continuing from the state kept in" in back.stderr, back.stderr[-2000:]
    assert "resumed from" in back.stderr and metrics(run_dir) == logged
    assert [r["label"] for r in kept(run_dir).values()] == ["lr=0.0005"], "the lr=5e-4 state is kept too"


@pytest.mark.workflow
def test_a_kept_state_survives_a_failed_start_and_is_never_overwritten(sample_dir, tmp_path):
    """A → B that fails before its first save → A resumes A's kept state; later changes keep new folders and
    never touch an earlier one; the cap removes the oldest and the log gives the total."""
    run_dir, a = tmp_path / "kept", TINY_TRAIN | {"epochs": 1, "keep_states": 2}
    assert run_training(sample_dir, run_dir, a).returncode == 0
    logged = metrics(run_dir)
    failed = run_training(sample_dir, run_dir, a | {"lr": 1.0e30, "clip_grad": 1.0e30})
    assert failed.returncode != 0 and not (run_dir / "state" / "last.pt").exists()
    (a_folder, record), *_ = kept(run_dir).items()
    a_digest = sha256(run_dir / "state" / "previous" / a_folder / "last.pt")
    back = run_training(sample_dir, run_dir, a)
    assert back.returncode == 0 and "continuing from the state kept in" in back.stderr, back.stderr[-2000:]
    assert "belong to a start that saved no last.pt" in back.stderr
    assert f"resumed from {run_dir / 'state' / 'last.pt'}: epoch 1, step {record['step']}" in back.stderr
    assert metrics(run_dir) == logged and sha256(run_dir / "state" / "last.pt") == a_digest
    for lr in (1e-3, 2e-3, 4e-3):  # three changes: A, then 1e-3 and 2e-3 are kept; the cap keeps two
        assert run_training(sample_dir, run_dir, a | {"lr": lr}).returncode == 0
    labels = [r["label"] for r in kept(run_dir).values()]
    assert sorted(labels) == ["lr=0.001", "lr=0.002"], labels
    final = run_training(sample_dir, run_dir, a | {"lr": 5e-3})
    assert "removed the kept state" in final.stderr and "lr=0.001" in final.stderr
    assert re.search(r"2 kept state\(s\), \d+\.\d\d GB in total", final.stderr), final.stderr[-2000:]


def copy_samples(sample_dir: Path, data: Path) -> Path:
    """A copy of the sample files with split CSVs that point at the copies."""
    shutil.copytree(sample_dir, data)
    for name in ("train.csv", "val.csv"):
        csv = data / "splits" / name
        csv.write_text(csv.read_text().replace(str(sample_dir), str(data)))
    return data


@pytest.mark.workflow
def test_touched_sample_file_keeps_the_state_and_a_changed_one_does_not(sample_dir, tmp_path):
    """Data identity is the sample files' content: a touch (same bytes) resumes, new bytes start fresh."""
    data = copy_samples(sample_dir, tmp_path / "data")
    run_dir = tmp_path / "touched"
    assert run_training(data, run_dir, TINY_TRAIN | {"epochs": 1}).returncode == 0
    sample = read_split_csv(data / "splits" / "train.csv")[0][1]
    os.utime(sample, ns=(time.time_ns(), time.time_ns()))
    resumed = run_training(data, run_dir, TINY_TRAIN | {"epochs": 2})
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-2000:]
    arrays = load_samples(sample)
    arrays["near_sdf"][:5] += 0.01
    np.savez(sample, **arrays)
    changed = run_training(data, run_dir, TINY_TRAIN | {"epochs": 2})
    assert changed.returncode == 0 and "starting fresh" in changed.stderr


@pytest.mark.workflow
def test_a_truncated_sample_file_stops_the_run_before_its_state_moves(sample_dir, tmp_path):
    """The sample files are checked before the data fingerprint is taken: a torn one is named and the state stays
    where it is, so putting the file back resumes it."""
    data = copy_samples(sample_dir, tmp_path / "data")
    run_dir = tmp_path / "torn_sample"
    assert run_training(data, run_dir, TINY_TRAIN | {"epochs": 1}).returncode == 0
    last = run_dir / "state" / "last.pt"
    before = sha256(last)
    sample = read_split_csv(data / "splits" / "val.csv")[0][1]
    good = sample.read_bytes()
    sample.write_bytes(good[: len(good) // 2])
    refused = run_training(data, run_dir, TINY_TRAIN | {"epochs": 2})
    assert refused.returncode == 1 and f"{sample}: sample file is unreadable" in refused.stderr.splitlines()[-1]
    assert sha256(last) == before and not kept(run_dir), "nothing moved aside"
    sample.write_bytes(good)
    resumed = run_training(data, run_dir, TINY_TRAIN | {"epochs": 2})
    assert resumed.returncode == 0 and "resumed from" in resumed.stderr, resumed.stderr[-2000:]


@pytest.mark.workflow
def test_unreadable_last_checkpoint_is_named_with_its_fix(sample_dir, tmp_path):
    run_dir = tmp_path / "torn"
    assert run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1}).returncode == 0
    last = run_dir / "state" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    refused = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 2})
    assert refused.returncode == 1
    assert f"{last} is unreadable" in refused.stderr and f"mv {last} {last}.unreadable" in refused.stderr


@pytest.mark.workflow
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
    assert f"check the step's sample files: ['{bad}']" in failed.stderr, "the message names the bad file"
    assert not (tmp_path / "nan" / "checkpoint-last.pt").exists()


@pytest.mark.parametrize("key", ["api_key", "key"])
@pytest.mark.parametrize("where", ["train", "runs"])
def test_wandb_key_in_config_is_refused(key, where):
    wandb = {"wandb": {"mode": "online", key: "secret"}}
    config = {"train": wandb} if where == "train" else {"runs": {"demo": wandb}}
    with pytest.raises(ConfigError, match=rf"'{where}(\.demo)?\.wandb\.{key}': .*export WANDB_API_KEY"):
        validate_config(config)


@pytest.mark.workflow
def test_wandb_online_without_a_key_is_named_before_any_step(sample_dir, tmp_path):
    online = TINY_TRAIN | {"epochs": 1, "wandb": {"mode": "online"}}
    refused = run_training(sample_dir, tmp_path / "online", online)  # train_env() drops every WANDB_ variable
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 1 and "train.wandb.mode is online but WANDB_API_KEY is not set" in last, last
    assert "train.wandb.mode: offline" in last and not (tmp_path / "online" / "state" / "last.pt").exists()


def test_learning_rate_schedule_warms_up_then_decays():
    from vecset.settings import TrainSettings
    from vecset.train.loop import lr_at

    s = TrainSettings(lr=1e-3, min_lr=1e-5, warmup_steps=10)
    lrs = [lr_at(step, 100, s) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def _weights(path):
    state = torch.load(path, weights_only=True)
    return {f"model.{k}": v for k, v in state["model"].items()} | {f"ema.{k}": v for k, v in state["ema"].items()}


@pytest.mark.workflow
def test_two_ranks_with_loader_workers_stop_together_mid_save_and_resume_exactly(sample_dir, tmp_path):
    """2-rank DDP, one persistent DataLoader worker per rank, last.pt saved every step by the clock: a SIGTERM
    to torchrun stops both ranks after rank 0's save; the resumed run ends bit-identical to an unbroken one."""
    settings = TINY_TRAIN | {"epochs": 6, "batch_size": 1, "num_workers": 1, "checkpoint_minutes": 1e-6}
    settings |= {"val_every_steps": 4}  # 4 cases over 2 ranks at batch 1: 2 steps per epoch, 12 in all
    unbroken = run_training(sample_dir, tmp_path / "unbroken", settings, ranks=2)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    assert unbroken.stderr.count("(every 1e-06 min") >= 10, "the clock saves last.pt after (almost) every step"

    run_dir = tmp_path / "broken"
    proc = subprocess.Popen(
        train_command(sample_dir, run_dir, settings, ranks=2), stderr=subprocess.PIPE, text=True, env=train_env()
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "epoch 2 step 4/12" in line:
            proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
            break
    lines += proc.stderr.readlines()
    proc.wait(timeout=120)
    log = "".join(lines)
    assert f"stop requested (SIGTERM reached {socket.gethostname()}: ranks 0-1): saved" in log, log[-3000:]
    saved = torch.load(run_dir / "state" / "last.pt", weights_only=True)
    assert 4 <= saved["step"] < 12 and saved["world_size"] == 2
    # Rank 1 leaves only after rank 0's save: its line follows the save's.
    save_line = log.index(f"at step {saved['step']} (stop requested")
    host = socket.gethostname()
    for rank in (0, 1):  # torchrun passed the signal on to each
        assert log.index(f"rank {rank} on {host}: stopped at step {saved['step']}") > save_line
    assert log.count("(SIGTERM received here)") == 2, log[-3000:]

    resumed = run_training(sample_dir, run_dir, settings, ranks=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final, reference = _weights(run_dir / "checkpoint-last.pt"), _weights(tmp_path / "unbroken" / "checkpoint-last.pt")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final), "resume changed the training"
    assert all(r.get("ddp_weight_spread", 0.0) == 0.0 for r in metrics(run_dir))


@pytest.mark.workflow
def test_a_state_saved_by_another_world_size_is_refused_with_the_fix(sample_dir, tmp_path):
    run_dir = tmp_path / "world"
    assert run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1}).returncode == 0
    refused = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 2}, ranks=2)
    assert refused.returncode != 0
    assert "was saved by 1 rank(s) and this job has 2" in refused.stderr
    assert "Set train.resources back to 1 rank(s) to resume, or move" in refused.stderr


@pytest.mark.workflow
def test_compiled_objective_trains_a_tiny_model_on_cpu(sample_dir, tmp_path):
    settings = TINY_TRAIN | {"epochs": 1, "compile": True, "activation_checkpointing": True}
    done = run_training(sample_dir, tmp_path / "compiled", settings, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = metrics(tmp_path / "compiled")
    assert records[-1]["step"] == 2 and all(np.isfinite(r.get("train_loss", 0.0)) for r in records)
    model, _ = load_model(tmp_path / "compiled" / "checkpoint-best.pt")
    assert not any(k.startswith("_orig_mod") for k in model.state_dict()), "compiled names leaked into weights"


@pytest.mark.workflow
def test_a_crash_with_loader_workers_ends_the_rank_instead_of_hanging(sample_dir, tmp_path):
    """Workers ignore stop signals, so the rank must end them itself when anything escapes the training loop."""
    cases = read_split_csv(sample_dir / "splits" / "train.csv")
    arrays = load_samples(cases[0][1])
    arrays["surface_labels"][:] = 200  # no such class: the worker's one-hot lookup raises IndexError
    bad = tmp_path / "bad" / "samples" / "case_0.npz"
    bad.parent.mkdir(parents=True)
    np.savez(bad, **arrays)
    paths = {"case_0": bad} | dict(read_split_csv(sample_dir / "splits" / "val.csv"))
    write_split_csv(tmp_path / "bad" / "splits" / "train.csv", ["case_0"], paths, SplitSettings(), 0)
    write_split_csv(tmp_path / "bad" / "splits" / "val.csv", ["case_4"], paths, SplitSettings(), 0)
    crashed = run_training(tmp_path / "bad", tmp_path / "run", TINY_TRAIN | {"num_workers": 1}, timeout=120)
    assert crashed.returncode != 0 and "IndexError" in crashed.stderr, crashed.stderr[-2000:]


@pytest.mark.workflow
def test_a_second_trainer_on_one_state_is_refused_naming_the_first(sample_dir, tmp_path):
    """One writer per run state: while a trainer holds state/, another refuses, naming it; the first finishes
    with every epoch logged once, and its lock is free again afterwards."""
    run_dir = tmp_path / "shared"
    settings = TINY_TRAIN | {"epochs": 60, "batch_size": 1, "val_every_steps": 1000}
    first = subprocess.Popen(
        train_command(sample_dir, run_dir, settings), stderr=subprocess.PIPE, text=True, env=train_env()
    )
    for line in first.stderr:
        if "epoch 1 step" in line:
            break
    second = run_training(sample_dir, run_dir, settings)
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"is in use by the trainer on {socket.gethostname()} (PID {first.pid}" in second.stderr
    first.stderr.read()
    assert first.wait(timeout=300) == 0
    assert [r["epoch"] for r in metrics(run_dir)] == list(range(1, 61)), "each epoch logged once, by one trainer"
    again = run_training(sample_dir, run_dir, settings)
    assert again.returncode == 0 and "resumed from" in again.stderr, "a lock whose holder exited is taken over"
    lock = run_dir / "state" / "trainer.lock"
    lock.unlink()
    lock.mkdir()  # not a lock file: named with the fix, not a traceback
    refused = run_training(sample_dir, run_dir, settings)
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 1 and f"{lock} cannot be opened as the state folder's lock file" in last, last
    assert f"rm -r {lock}" in last


@pytest.mark.workflow
def test_torn_metrics_line_is_dropped_at_the_next_start(sample_dir, tmp_path):
    """A crash or a full disk mid-append leaves a torn last line; the resumed run drops it (and records past
    its state, which run again) instead of leaving a file that breaks the plots."""
    run_dir = tmp_path / "metrics"
    assert run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1}).returncode == 0
    log = run_dir / "state" / "metrics.jsonl"
    with open(log, "a") as handle:
        handle.write('null\n{"epoch": 2, "step": 99, "train_loss": 0.1}\n{"epoch": 2, "st')
    (run_dir / "state" / "data_digests.json").write_text("[]")  # not a record of digests: hashed again
    resumed = run_training(sample_dir, run_dir, TINY_TRAIN | {"epochs": 2})
    assert resumed.returncode == 0 and "dropped 2 torn line(s) and 1 record(s) past step 2" in resumed.stderr
    assert "resumed from" in resumed.stderr, resumed.stderr[-2000:]
    assert [r["step"] for r in metrics(run_dir) if "train_loss" in r] == [2, 4]


@pytest.mark.workflow
def test_wandb_offline_makes_no_network_call(sample_dir, tmp_path):
    """Every Python process of the run reports its name lookups and connections off the machine (an audit hook):
    an offline run makes none. The spy itself is checked on a lookup it must see."""
    spy_log = tmp_path / "network.log"
    env = train_env() | {"PYTHONPATH": str(Path(__file__).parent / "network_spy"), "VECSET_NETWORK_LOG": str(spy_log)}
    probe = "import socket\ntry: socket.getaddrinfo('wandb.invalid', 443)\nexcept OSError: pass"
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=60)
    assert "socket.getaddrinfo wandb.invalid:443" in spy_log.read_text()
    spy_log.unlink()

    run_dir = tmp_path / "offline"
    command = train_command(sample_dir, run_dir, TINY_TRAIN | {"epochs": 1, "wandb": {"mode": "offline"}})
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(run_dir.glob("state/wandb/offline-run-*")), "wandb offline run folder missing"
    assert not spy_log.exists(), spy_log.read_text()


def test_adam_beta2_reaches_the_optimizer():
    config = validate_config({"train": TINY_TRAIN | {"adam_beta2": 0.98}, "runs": {"b2": {}}})
    plan = make_plan(resolve_runs(config)["b2"], 0, ["a", "b", "c"], 4, 2)
    state = RunState(plan, "fingerprint", torch.device("cpu"))
    assert state.optimizer.param_groups[0]["betas"] == (0.9, 0.98)
    with pytest.raises(ConfigError, match="adam_beta2"):
        validate_config({"train": {"adam_beta2": 1.0}})


def test_the_trainer_runs_in_process_and_a_rerun_only_finishes(sample_dir, tmp_path, monkeypatch):
    """vecset.train.run.main in this process (world size 1, no process group): the plan's steps, the outputs, the
    metrics; run again, it resumes a finished state and trains no step more."""
    from vecset.train.run import main

    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    run_dir = tmp_path / "run"
    command = train_command(sample_dir, run_dir, TINY_TRAIN | {"epochs": 2, "val_every_steps": 2})
    args = command[command.index("vecset.train.run") + 1 :]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        assert main(args) == 0
        first = torch.load(run_dir / "checkpoint-last.pt", weights_only=True)
        assert main(args) == 0
    finally:
        for sig, handler in handlers.items():  # the trainer's stop handlers stay out of the test session
            signal.signal(sig, handler)
    best = torch.load(run_dir / "checkpoint-best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoint-last.pt", weights_only=True)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert last["epoch"] == 2 and last["world_size"] == 1 and best["step"] >= 1
    assert [r["epoch"] for r in records if "train_loss" in r] == [1, 2]
    history = (run_dir / "state" / "messages.log").read_text()
    assert f"resumed from {run_dir / 'state' / 'last.pt'}: epoch 2, step {first['step']}" in history
    assert first["step"] == last["step"], "the rerun trained more steps"


def test_the_weight_average_warms_up_then_keeps_its_decay():
    from vecset.train.state import WeightAverage

    model = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, decay=0.9999)
    decays = []
    for value in range(1, 3001):
        model.weight.data.fill_(float(value))
        decays.append(average.decay_now)
        average.update(model)
    assert decays[1] == pytest.approx(2 / 11) and decays[-1] < 0.9999
    assert all(a <= b for a, b in itertools.pairwise(decays))
    # After 3000 updates of a weight rising 1, 2, …, 3000 the average follows the recent values: without the
    # warm-up it would still hold 74 % of the first weight (0.9999 ** 3000).
    assert 2600 < average.module.weight.item() < 3000
    demo = WeightAverage(model, decay=0.995)
    demo.updates = 1789
    assert demo.decay_now < 0.995
    demo.updates = 1790
    assert demo.decay_now == 0.995, "the demo's 0.995 from update 1790 of its 4000"


def test_a_changed_run_length_names_the_learning_rate_jump_on_resume():
    from types import SimpleNamespace

    from vecset.settings import TrainSettings
    from vecset.train.loop import lr_at
    from vecset.train.trainer import schedule_change

    t = TrainSettings(lr=1e-3, min_lr=1e-5, warmup_steps=10, max_steps=300)
    plan = SimpleNamespace(train=t, total_steps=300, steps_per_epoch=8)
    run = SimpleNamespace(plan=plan, progress=SimpleNamespace(step=200))
    assert schedule_change({"max_steps": 300}, run) == ""
    said = schedule_change({"max_steps": 200}, run)
    assert (
        said.startswith("run length 200 → 300 steps")
        and f"from {lr_at(200, 200, t):.3g} to {lr_at(200, 300, t):.3g}" in said
    )
    assert schedule_change({"max_steps": 0, "epochs": 25}, run).startswith("run length 200 → 300")
