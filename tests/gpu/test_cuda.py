"""GPU correctness: what only a CUDA device can get wrong, checked against the CPU on the same weights and data.

Skipped without CUDA. `bash bench/gpu.sh` runs them first on a GPU machine (within 90 s); `bash bench/gpu.sh
--smoke` (tests/test_benches.py) runs them with the CPU standing in for the GPU (VECSET_GPU_TESTS_ON_CPU=1), so
that their code keeps working where no GPU is: there both sides are the CPU and the tolerances hold trivially.

Tolerances: bf16 autocast keeps about 3 significant digits, so a training step's loss on the GPU is within 5 % of
the fp32 CPU step's and its gradient norm within 10 %; coarse-to-fine decoding in fp32 gives the CPU's label map
(Dice >= 0.995 per structure) and the sign of 99.99 % of the grid's values, in the default bf16 Dice >= 0.98 and
99.9 % (thin structures lose a voxel layer here and there: bench/decode.py measures the same on the demo model).
"""

from __future__ import annotations

import copy
import functools
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from vecset.data.samples import load_normalisation, load_samples
from vecset.data.split import read_split_csv
from vecset.eval.decode import GridDecoder
from vecset.eval.encoding import encode_dataset, encoding_dataset, latent_sdf
from vecset.eval.fitting import CaseSurface, fit_latents
from vecset.eval.reconstruct import label_map_on_image
from vecset.model.checkpoint import load_checkpoint
from vecset.model.items import SampleDataset
from vecset.plan import RunPlan
from vecset.preemption import StopRequest
from vecset.settings import EvalSettings
from vecset.train import distributed
from vecset.train.loop import EpochMeter, train_step, training_batches
from vecset.train.state import RunState
from vecset.train.trainer import objective_for

from conftest import DEFAULT_LABELS
from training_helpers import TINY_TRAIN, write_test_plan

STAND_IN = os.environ.get("VECSET_GPU_TESTS_ON_CPU") == "1"
N_CLASSES = len(DEFAULT_LABELS)


@pytest.fixture(scope="module")
def device() -> torch.device:
    """The GPU, or the CPU standing in for it under bench/gpu.sh --smoke."""
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if STAND_IN:
        return torch.device("cpu")
    pytest.skip("no CUDA device (bash bench/gpu.sh --smoke runs these with the CPU standing in)")


def tiny_plan(sample_dir: Path, folder: Path, **settings: object) -> RunPlan:
    """The tiny test model's plan over the test cases (train.device auto: the GPU where there is one)."""
    return RunPlan.read(write_test_plan(sample_dir, folder / "run", TINY_TRAIN | settings))


def training_items(plan: RunPlan, sample_dir: Path) -> SampleDataset:
    cases = read_split_csv(sample_dir / "splits" / "train.csv")
    return SampleDataset(cases, N_CLASSES, plan.train.items, True, seed=plan.seed)


def one_step(
    run: RunState, batch: dict[str, torch.Tensor], ranks: distributed.Ranks, objective: object = None
) -> tuple[float, float]:
    """(loss, gradient norm) of one optimizer step of the trainer's own train_step on ``batch`` (bf16 autocast on
    CUDA, fp32 on the CPU), with the trainer's objective (or ``objective``)."""
    meter = EpochMeter(ranks.device)
    objective = objective or objective_for(run, ranks)
    outcome = train_step(run, objective, iter([batch]), ranks, StopRequest(), meter)  # type: ignore[arg-type]
    return outcome.loss, float(meter.sums["grad_norm"])


def single(device: torch.device) -> distributed.Ranks:
    return distributed.Ranks(0, 1, 1, device)


def a_batch(plan: RunPlan, sample_dir: Path) -> dict[str, torch.Tensor]:
    items = training_items(plan, sample_dir)
    batch = [items[(0, index)] for index in range(plan.train.batch_size)]
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}


def test_a_bf16_training_step_on_the_device_matches_the_fp32_cpu_step(device, sample_dir, tmp_path):
    plan = tiny_plan(sample_dir, tmp_path)
    batch = a_batch(plan, sample_dir)
    cpu_loss, cpu_norm = one_step(RunState(plan, "fp", torch.device("cpu")), batch, single(torch.device("cpu")))
    loss, norm = one_step(RunState(plan, "fp", device), batch, single(device))  # the same initial weights
    assert np.isfinite(loss) and np.isfinite(norm)
    assert loss == pytest.approx(cpu_loss, rel=0.05)
    assert norm == pytest.approx(cpu_norm, rel=0.10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_one_rank_nccl_step_runs_through_the_trainers_own_code(device, sample_dir, tmp_path, monkeypatch):
    """A process group of one rank (NCCL on the GPU, gloo on the CPU stand-in): the trainer wraps its objective
    in DDP, and its step's all-reduces go through the group."""
    plan = tiny_plan(sample_dir, tmp_path)
    backend = "nccl" if device.type == "cuda" else "gloo"
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        with distributed.ranks(plan.train.device) as ranks:
            assert ranks.device.type == device.type and dist.get_backend() == backend
            run = RunState(plan, "fp", ranks.device)
            objective = objective_for(run, ranks)
            assert isinstance(objective, torch.nn.parallel.DistributedDataParallel)
            with training_batches(training_items(plan, sample_dir), run, ranks) as batches:
                outcome = train_step(run, objective, batches, ranks, StopRequest(), EpochMeter(ranks.device))
        assert np.isfinite(outcome.loss) and run.progress.step == 1 and distributed.joined()
    finally:
        dist.destroy_process_group()


def weights_on_cpu(run: RunState) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in run.model.state_dict().items()}


def test_a_state_saved_on_the_device_resumes_on_the_cpu_and_the_other_way_round(device, sample_dir, tmp_path):
    plan = tiny_plan(sample_dir, tmp_path)
    batch = a_batch(plan, sample_dir)
    cpu = torch.device("cpu")
    for source, target in ((device, cpu), (cpu, device)):
        run = RunState(plan, "fp", source)
        one_step(run, batch, single(source))
        path = tmp_path / f"{source.type}-to-{target.type}.pt"
        run.save(path)
        resumed = RunState(plan, "fp", target)
        resumed.restore(load_checkpoint(path))
        assert resumed.progress.step == 1
        saved = weights_on_cpu(run)
        assert all(torch.equal(saved[k], v) for k, v in weights_on_cpu(resumed).items()), (source, target)
        assert next(iter(resumed.optimizer.state.values()))["exp_avg"].device.type == target.type
        assert np.isfinite(one_step(resumed, batch, single(target))[0]) and resumed.progress.step == 2


@pytest.fixture(scope="module")
def encoded(trained_model, sample_dir):
    """The trained tiny model, the first validation case (id, sample file) and its encoder latent set (CPU)."""
    model, plan = trained_model
    cases = read_split_csv(sample_dir / "splits" / "val.csv")[:1]
    ((_, z),) = encode_dataset(model, encoding_dataset(model, plan, cases), batch_size=1)
    return model, cases[0], z


def decoded(model, z, path: Path, device: torch.device, precision: str) -> tuple[torch.Tensor, np.ndarray]:
    """The coarse-to-fine grid (C, R, R, R) on the CPU and the case's label map on its image grid, decoded on
    ``device``."""
    arrays = load_samples(path)
    center, scale = load_normalisation(path, str(arrays["case_id"]))
    placed = copy.deepcopy(model).to(device)
    settings = EvalSettings(resolution=48, precision=precision)  # type: ignore[arg-type]
    grid = GridDecoder(settings, device).decode(latent_sdf(placed, z, settings.precision), scale)
    shape = tuple(int(v) for v in arrays["shape"])
    values = list(DEFAULT_LABELS.values())
    labels = label_map_on_image(grid.values, center, scale, arrays["affine"], shape, values).labels  # type: ignore[arg-type]
    return grid.values.cpu(), labels


def dice_per_structure(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    scores = {}
    for name, value in DEFAULT_LABELS.items():
        x, y = a == value, b == value
        if x.any() or y.any():
            scores[name] = float(2 * (x & y).sum() / (x.sum() + y.sum()))
    return scores


@pytest.fixture
def no_tf32():
    """Matrix products in full fp32 for the test, as the evaluate job computes (objective_for, which an earlier test
    in this process called, turns TF32 on for training)."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = False
    yield
    matmul.allow_tf32 = before


def test_coarse_to_fine_decoding_on_the_device_gives_the_cpus_label_map(device, encoded, no_tf32):
    """The same field, refined at the same cells, on either device: every grid node's sign (all ten structures)
    and the label map of every structure reconstructed."""
    model, (_, path), z = encoded
    reference_grid, reference = decoded(model, z, path, torch.device("cpu"), "fp32")
    for precision, least_dice, least_signs in (("fp32", 0.995, 0.9999), ("bf16", 0.98, 0.999)):
        grid, labels = decoded(model, z, path, device, precision)
        signs = float(((grid < 0) == (reference_grid < 0)).double().mean())
        dice = dice_per_structure(labels, reference)
        assert dice and min(dice.values()) >= least_dice, (precision, dice)
        assert signs >= least_signs, (precision, signs)


def test_latent_fitting_on_the_device_lowers_the_surface_error_as_on_the_cpu(device, encoded):
    model, (case, path), z = encoded
    surfaces = [CaseSurface.read(path, N_CLASSES, case)]
    settings = EvalSettings()
    on_cpu = fit_latents(model, z[None], surfaces, 30, settings.fit_lr, 256)
    placed = copy.deepcopy(model).to(device)
    on_device = fit_latents(placed, z[None].to(device), surfaces, 30, settings.fit_lr, 256, bf16=device.type == "cuda")
    cpu_ratio = float(on_cpu.surface_after[0] / on_cpu.surface_before[0])
    device_ratio = float(on_device.surface_after[0] / on_device.surface_before[0])
    assert cpu_ratio < 0.95 and device_ratio < 0.95, (cpu_ratio, device_ratio)  # as tests/test_fitting.py
    assert device_ratio == pytest.approx(cpu_ratio, abs=0.1)
    assert on_device.z.device.type == device.type and torch.isfinite(on_device.z).all()


def test_train_compile_runs_a_step(device, sample_dir, tmp_path, monkeypatch):
    """train.compile through the trainer's objective_for; the CPU stand-in traces the graph without generating code
    (inductor on the CPU is tests/test_training.py's)."""
    if device.type == "cpu":
        monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    plan = tiny_plan(sample_dir, tmp_path, compile=True)
    run = RunState(plan, "fp", device)
    batch, ranks = a_batch(plan, sample_dir), single(device)
    objective = objective_for(run, ranks)  # compiled once, as the trainer does
    losses = [one_step(run, batch, ranks, objective)[0] for _ in range(2)]
    assert all(np.isfinite(loss) for loss in losses) and run.progress.step == 2
    assert not any(k.startswith("_orig_mod") for k in run.model.state_dict())
