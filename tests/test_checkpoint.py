"""Checkpoints: weights_only loading, RNG round trip, and a kill during a write leaves the old file intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vecset.model.checkpoint import load_checkpoint, save_checkpoint
from vecset.train.state import rng_state, set_rng_state


def test_checkpoint_loads_with_weights_only_and_restores_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "rng": rng_state()}
    save_checkpoint(tmp_path / "last.pt", state)
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["weight"], model.weight)
    expected = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    set_rng_state(load_checkpoint(tmp_path / "last.pt")["rng"])
    assert (random.random(), np.random.random(), torch.rand(1)) == expected  # noqa: NPY002


WRITER = """
import sys, torch
from vecset.model.checkpoint import save_checkpoint
big = {"w": torch.randn(64, 1024, 1024)}  # 256 MB: the write takes long enough to be killed mid-way
print("ready", flush=True)
while True:
    save_checkpoint(sys.argv[1], {"epoch": 2, "model": big})
"""


@pytest.mark.workflow
def test_kill_during_write_leaves_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"epoch": 1, "model": {"w": torch.ones(3)}})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while not any(p.name.startswith(".last.pt.") for p in tmp_path.iterdir()):  # a temp file is being written
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(target)  # the old one or a complete new one, never a torn file
    assert state["epoch"] in (1, 2)
    if state["epoch"] == 1:
        assert torch.equal(state["model"]["w"], torch.ones(3))


def _write(case_id: str, path: str) -> None:
    Path(path).write_bytes(b"x" * 4096)


def _save(case_id: str, path: str) -> None:
    torch.save({"weights": torch.zeros(100_000)}, path)


@pytest.mark.parametrize(("func", "expected"), [
    (_write, "case_7: no space left on device ("),
    (_save, "case_7: writing a checkpoint failed, most likely a full disk ("),
])  # fmt: skip
def test_an_unexpected_job_error_reaches_the_rule_log_in_plain_words(tmp_path, func, expected):
    """/dev/full is a device that is always full: the job ends with status 1, its traceback in the rule's log
    and a last line naming the case, the reason and the fix (torch.save itself only says 'unexpected pos')."""
    from vecset.snakemake_adapter import run_job

    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop:
        run_job(log, func, case_id="case_7", path="/dev/full")
    assert stop.value.code == 1
    text = log.read_text()
    assert "Traceback" in text and text.strip().splitlines()[-1].split(" ERROR ", 1)[1].startswith(expected), text


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_outputs_take_the_mode_of_the_umask_and_killed_writes_are_swept(tmp_path, umask, mode):
    from vecset.atomic import atomic_path, remove_leftover_temps, write_bytes_atomic

    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "out.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == mode, "group members must be able to read results"
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "last.pt") as tmp:
        tmp.write_bytes(b"y" * 100)
        raise KeyboardInterrupt  # an interrupted write removes its own temp file
    leftover = tmp_path / ".last.pt.abc123.tmp"  # what a kill -9 mid-save leaves
    leftover.write_bytes(b"z" * 10)
    assert remove_leftover_temps(tmp_path) == 10 and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_folder_output_appears_whole_or_not_at_all(tmp_path):
    """atomic_directory: a failed fill leaves the old folder exactly as it was and no temp folder; a successful
    one replaces the old folder whole (no file of the old one survives)."""
    from vecset.atomic import atomic_directory, write_bytes_atomic

    case = tmp_path / "meshes" / "case_1"
    old_umask = os.umask(0o027)
    try:
        with atomic_directory(case) as folder:
            write_bytes_atomic(folder / "qc.json", b"{}")
            write_bytes_atomic(folder / "old_only.ply", b"old")
    finally:
        os.umask(old_umask)
    assert case.stat().st_mode & 0o777 == 0o750, "group members must be able to read results"
    with pytest.raises(RuntimeError), atomic_directory(case) as folder:
        write_bytes_atomic(folder / "qc.json", b"{new}")
        raise RuntimeError("meshing failed half-way")
    assert sorted(p.name for p in case.iterdir()) == ["old_only.ply", "qc.json"]
    assert (case / "qc.json").read_bytes() == b"{}"
    assert [p.name for p in case.parent.iterdir()] == ["case_1"]
    with atomic_directory(case) as folder:
        write_bytes_atomic(folder / "qc.json", b"{new}")
    assert [p.name for p in case.iterdir()] == ["qc.json"] and (case / "qc.json").read_bytes() == b"{new}"
    assert [p.name for p in case.parent.iterdir()] == ["case_1"]


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs: a real file system that fills up (needs root to mount; skipped otherwise)."""
    import shutil as sh

    if os.geteuid() != 0 or sh.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_and_sample_file_and_says_why(full_disk):
    from vecset.data.samples import save_samples
    from vecset.errors import describe_failure

    last = full_disk / "last.pt"
    save_checkpoint(last, {"weights": torch.zeros(1000)})
    with pytest.raises(RuntimeError) as failed:
        save_checkpoint(last, {"weights": torch.zeros(1_000_000)})  # 4 MB on a 1 MB disk
    assert describe_failure(failed.value, full_disk).startswith("writing a checkpoint failed, most likely a full disk")
    assert load_checkpoint(last)["weights"].shape == (1000,), "the previous checkpoint is intact"
    from vecset.data.contract import CONTRACT_KEYS

    arrays = {key: np.zeros(1) for key in CONTRACT_KEYS} | {"surface_points": np.zeros((200_000, 3), np.float32)}
    with pytest.raises(OSError) as full:
        save_samples(full_disk / "case.npz", arrays)
    # Named by the output, not its temp file, and the free space of its folder, not of the working directory.
    assert describe_failure(full.value).startswith(f"no space left on device writing {full_disk / 'case.npz'} (")
    assert f"MB free in {full_disk})" in describe_failure(full.value)
    assert sorted(p.name for p in full_disk.iterdir()) == ["last.pt"], "no partial file or temp file is left"


@pytest.mark.workflow
def test_training_on_a_full_disk_ends_with_a_plain_reason(sample_dir, full_disk):
    from training_helpers import TINY_TRAIN, run_training

    failed = run_training(sample_dir, full_disk / "run", TINY_TRAIN | {"epochs": 1, "model": {"width": 64}})
    assert failed.returncode == 1, failed.stderr[-2000:]
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: run state {full_disk / 'run' / 'state'}: ") and "full disk" in last_line
    assert not list((full_disk / "run" / "state").glob(".*.tmp")), "the failed save left no temp file"


def test_a_full_disk_never_tears_the_metrics_log(full_disk):
    """The disk fills mid-line (the line's first bytes fit in the file's last page): the file is cut back to its
    previous lines and the error names the file and the cause."""
    import errno
    import json

    from vecset.atomic import append_line
    from vecset.errors import describe_failure

    log = full_disk / "metrics.jsonl"
    append_line(log, json.dumps({"epoch": 1, "step": 1}))
    fd = os.open(full_disk / "filler", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    before = log.read_bytes()
    with pytest.raises(OSError) as full:
        append_line(log, json.dumps({"epoch": 2, "step": 2, "note": "x" * 20_000}))
    assert full.value.errno == errno.ENOSPC
    assert describe_failure(full.value, full_disk).startswith(f"no space left on device writing {log} ")
    assert log.read_bytes() == before, "the torn part of the line was cut off"
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"epoch": 1, "step": 1}]


def test_a_job_sweeps_what_killed_writes_of_its_own_outputs_left_and_nothing_else(tmp_path):
    """results/samples/.{case}.npz.*.tmp (and a checkpoint's 7 GB one) would stay forever: the job that writes
    the output removes them first; another output's temp file, perhaps being written, is left alone."""
    from vecset.snakemake_adapter import run_job

    samples = tmp_path / "samples"
    samples.mkdir()
    mine, other = samples / ".case_a.npz.k1ll3d.tmp", samples / ".case_b.npz.writing.tmp"
    mine.write_bytes(b"x" * 100)
    other.write_bytes(b"y" * 100)
    folder = samples / ".case_a.npz.old.k1ll3d.tmp"  # what a killed atomic_directory leaves
    folder.mkdir()
    (folder / "part.ply").write_bytes(b"z")
    assert run_job(None, lambda: "ran", outputs=[samples / "case_a.npz"]) == "ran"
    assert sorted(p.name for p in samples.iterdir()) == [other.name]


def test_a_linked_output_shares_the_state_file_and_keeps_it_when_the_state_is_replaced(tmp_path, monkeypatch):
    from vecset.atomic import link_atomic, write_bytes_atomic

    state, output = tmp_path / "state" / "last.pt", tmp_path / "checkpoint-last.pt"
    write_bytes_atomic(state, b"step 100")
    link_atomic(state, output)
    assert output.stat().st_ino == state.stat().st_ino, "a link, not a 7 GB copy"
    link_atomic(state, output)  # linked again, as a finished run's rerun does: nothing left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last.pt", "state"]
    write_bytes_atomic(state, b"step 200")  # a later save replaces the state file whole
    assert output.read_bytes() == b"step 100" and state.read_bytes() == b"step 200"

    def refuse(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("os.link", refuse)
    link_atomic(state, output)
    assert output.read_bytes() == b"step 200" and output.stat().st_ino != state.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last.pt", "state"], "no temp file left"
