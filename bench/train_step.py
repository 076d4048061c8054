"""Training-step benchmark of the real trainer: its plan, RunState (fused AdamW on CUDA, EMA, clipping),
objective_for (TF32, activation checkpointing, torch.compile), SampleDataset over real sample files and the
run's one DataLoader (training_batches: workers, prefetch, pinned memory), timed by calling train_step as the
trainer does (one all-reduce and one host sync per step). The seed's configuration (manual attention +
autograd eikonal with create_graph=True, synthetic batches: the seed had no loader) runs in the same table as
the baseline.

Every configuration runs in a fresh process (its own peak memory; an out-of-memory error ends only that row).
Sample files: --samples (default results/samples, written by `snakemake --cores N --until split`); their
paths repeat so that every batch is full. --items production trains as config/imagecas.yaml's imagecas run
(vecset.config.load_run: its model, items, loss, optimizer and CPUs per rank); preset, batch, workers, sampling,
compile and activation checkpointing come from the options, DataLoader workers at most the CPUs minus two. Each
configuration's line is printed when it has run, then one table; the last line is the best "ours" figure:
`train step <preset> batch <B> (...): <N> samples/s, data wait <W>%[, MFU <M>%][, <R>x the seed's]`.
bench/gpu.sh runs the whole GPU record in one go.

    python bench/train_step.py --smoke --samples DIR       # CPU smoke run (tests/test_benches.py)
    python bench/train_step.py --device cuda --presets upstream --batch-sizes 16 --workers 0,14 \\
        --input-sampling uniform,fps                                    # loader, sampling, MFU
    python bench/train_step.py --device cuda --presets upstream --batch-sizes 8,12,16 --routes ours \\
        --max-batch --no-drain --steps 3 --warmup 1                     # memory, largest batch in 40 / 80 GB
    python bench/train_step.py --device cuda --presets upstream --batch-sizes 16 --routes ours --profile
    python bench/train_step.py --device cuda --presets upstream --save  # one state/last.pt save
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchlib import PRODUCTION_RUN, REPO, configured_run, log, spare_cpus

if TYPE_CHECKING:
    import torch

# Dense bf16 peak (TFLOP/s) by device name, first match wins; MFU = plan.flops_per_sample × samples/s / this.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
}
# Heuristic kernel/op families for the profiler's split of one step (first match wins).
PROFILE_FAMILIES = {
    "attention": ("flash", "fmha", "attention", "sdpa", "softmax"),
    "optimizer (AdamW, EMA, clip)": ("adam", "foreach", "multi_tensor"),
    "matmul": ("gemm", "xmma", "cutlass", "cublas", "nvjet", "aten::mm", "aten::addmm", "aten::bmm", "matmul"),
    "copies": ("memcpy", "memset", "aten::copy_", "aten::to"),
}


@dataclass(frozen=True)
class Case:
    """One configuration, run in its own process."""

    route: str  # "ours" (the real trainer step) or "seed" (synthetic, the seed's attention and eikonal)
    preset: str
    batch: int
    device: str
    steps: int
    warmup: int
    workers: int | None  # None: the trainer's rule (train.loader_workers)
    sampling: str
    compile: bool
    checkpointing: bool
    items: str  # "production" (config/imagecas.yaml's run) or "demo" (config defaults)
    samples: str
    cpus: int
    memory_gb: float | None
    drain: bool
    profile: bool
    mode: str = "step"  # "step" or "save"
    compile_backend: str = "inductor"  # torch.compile's backend (aot_eager: trace without code generation)
    save_dir: str = ""
    peak_tflops: float | None = None

    @property
    def variant(self) -> str:
        compiled = "compile" if self.compile_backend == "inductor" else f"compile {self.compile_backend}"
        names = [n for n, on in ((compiled, self.compile), ("act. ckpt", self.checkpointing)) if on]
        return "+".join(names) or "-"


# --- the plan and the data ---------------------------------------------------------------------------------


def bench_plan(case: Case, n_train: int) -> Any:
    """The plan a real run of this configuration would get on one rank: the production run (config/imagecas.yaml)
    or the demo run, with the configuration's preset, batch, loader, sampling and options; DataLoader workers at
    most the machine's CPUs minus two."""
    from vecset.plan import make_plan
    from vecset.settings import IMAGECAS_LABELS

    gpu = case.device == "cuda"
    overrides: dict[str, Any] = {
        "preset": case.preset,
        "batch_size": case.batch,
        "num_workers": case.workers,
        "compile": case.compile,
        "activation_checkpointing": case.checkpointing,
        "device": case.device,
        "tensorboard": False,
        "progress": False,
        "wandb": {"mode": "disabled"},
        "items": {"input_sampling": case.sampling},
        "resources": {"gpus": 1 if gpu else 0, "cpu_ranks": 1, "nodes": 1},
    }
    if case.cpus:
        overrides["resources"]["cpus_per_rank"] = case.cpus
    run = configured_run(case.items == "production", overrides)
    if run.train.loader_workers(gpu) > spare_cpus():
        run = configured_run(case.items == "production", overrides | {"num_workers": spare_cpus()})
    return make_plan(run, 0, list(IMAGECAS_LABELS), n_train, 1)


def bench_cases(samples: str, batch: int) -> list[tuple[str, Path]]:
    """Every sample file at least once, repeated up to a multiple of the batch: every batch is full."""
    files = sorted(Path(samples).glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no sample files in {samples}; run `snakemake --cores N --until split` first")
    n = batch * math.ceil(len(files) / batch)
    return [(files[i % len(files)].stem, files[i % len(files)]) for i in range(n)]  # a file's own case id


# --- a configuration in its own process --------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cap_memory(case: Case, device: torch.device) -> None:
    """--memory-gb: the caching allocator may hold at most this many GiB (as on a smaller card)."""
    if case.memory_gb and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, case.memory_gb * 2**30 / total), device)


def peak_memory(device: torch.device) -> tuple[float, float]:
    """(max allocated, max reserved) GiB on CUDA since the last reset; the process's peak RSS twice on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, torch.cuda.max_memory_reserved(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return rss, rss


def peak_tflops(case: Case, device: torch.device) -> float:
    if case.peak_tflops:
        return case.peak_tflops
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), math.nan)


def item_ms(dataset: Any, n: int = 4) -> float:
    """Mean time to build one training item in this process (what each loader worker does per item)."""
    started = time.perf_counter()
    for index in range(min(n, len(dataset))):
        dataset[(0, index)]
    return 1000 * (time.perf_counter() - started) / min(n, len(dataset))


@dataclass
class Timed:
    """What the timed steps of a configuration measured."""

    setup_s: float
    warmup_s: float
    drain: int
    step_s: float
    elapsed: float
    data_wait: float
    alloc_gb: float
    reserved_gb: float


def time_steps(
    case: Case, run: Any, objective: Any, batches: Iterator[Any], ranks: Any, setup_started: float, workers: int
) -> Timed:
    """Warm-up steps, then (with --drain) as many untimed steps as the loader's ``workers`` may have queued
    meanwhile, so the timed steps see its steady state; then the timed steps, each by calling train_step as the
    trainer does; with --profile, one more step under the profiler."""
    from vecset.preemption import StopRequest
    from vecset.train.loop import PREFETCH_BATCHES, EpochMeter, train_step

    device, stop = ranks.device, StopRequest()
    meter = EpochMeter(device)
    setup_s = time.perf_counter() - setup_started

    def step() -> None:
        if train_step(run, objective, batches, ranks, stop, meter).stopped:
            raise SystemExit("stop requested (SIGTERM): configuration abandoned")

    drain = workers * PREFETCH_BATCHES if case.drain else 0
    started = time.perf_counter()
    for _ in range(case.warmup + drain):
        step()
    sync(device)
    warmup_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter = EpochMeter(device)
    times, started = [], time.perf_counter()
    last = started
    for _ in range(case.steps):
        step()
        now = time.perf_counter()
        times.append(now - last)  # between the step's host syncs: its optimizer update overlaps the next
        last = now
    sync(device)
    elapsed = time.perf_counter() - started
    alloc, reserved = peak_memory(device)
    if case.profile:
        profile_step(step, device, f"{case.preset} batch {case.batch}, {case.sampling} input, {workers} workers")
    return Timed(setup_s, warmup_s, drain, statistics.median(times), elapsed, meter.data_wait, alloc, reserved)


def run_ours(case: Case) -> dict[str, Any]:
    """The real trainer's step: plan, RunState, objective_for, SampleDataset and training_batches."""
    from vecset.model.items import SampleDataset
    from vecset.train import distributed
    from vecset.train.loop import training_batches
    from vecset.train.state import RunState
    from vecset.train.trainer import objective_for

    setup = time.perf_counter()
    cases = bench_cases(case.samples, case.batch)
    plan = bench_plan(case, len(cases))
    t, gpu = plan.train, case.device == "cuda"
    with distributed.ranks(t.device) as ranks:
        device = ranks.device
        cap_memory(case, device)
        torch.set_num_threads(t.torch_threads(gpu))
        run = RunState(plan, "bench", device)
        dataset = SampleDataset(cases, len(plan.class_names), t.items, True, seed=plan.seed)
        per_item = item_ms(dataset)
        objective = objective_for(run, ranks)
        workers = t.loader_workers(gpu)
        with training_batches(dataset, run, ranks) as batches:
            timed = time_steps(case, run, objective, batches, ranks, setup, workers)
        samples_per_s = case.batch * case.steps / timed.elapsed
        peak = peak_tflops(case, device)
        return {
            "device_name": torch.cuda.get_device_name(device) if gpu else "cpu",
            "params_m": plan.parameters / 1e6,
            "flops_per_sample": plan.flops_per_sample,
            "cpus_per_rank": t.resources.cpus_per_rank,
            "workers": workers,
            "torch_threads": torch.get_num_threads(),
            "drain": timed.drain,
            "setup_s": timed.setup_s,
            "warmup_s": timed.warmup_s,
            "step_s": timed.step_s,
            "samples_per_s": samples_per_s,
            "data_wait": timed.data_wait / timed.elapsed,
            "item_ms": per_item,
            "loader_cap": max(workers, 1) * 1000 / per_item,
            "peak_gb": timed.alloc_gb,
            "reserved_gb": timed.reserved_gb,
            "peak_tflops": peak,
            "mfu": plan.flops_per_sample * samples_per_s / (peak * 1e12),
            "items": dataclasses.asdict(t.items) | {"n_eikonal": t.n_eikonal},
            "model": t.model,
        }


def profile_step(step: Any, device: torch.device, title: str) -> None:
    """One more step under torch.profiler: the top ops by device (CPU) time, and a split by op family."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    events = prof.key_averages()
    sort_by = "cuda_time_total" if gpu else "cpu_time_total"
    print(f"\nprofile of one train_step ({title}), top ops by {sort_by}:", flush=True)
    print(events.table(sort_by=sort_by, row_limit=15), flush=True)
    totals: dict[str, float] = {}
    for event in events:  # on CUDA the kernels only: an op's self device time repeats its kernels' time
        if gpu and event.device_type == DeviceType.CPU:
            continue
        us = event.self_device_time_total if gpu else event.self_cpu_time_total
        name = event.key.lower()
        family = next((f for f, keys in PROFILE_FAMILIES.items() if any(k in name for k in keys)), "other")
        totals[family] = totals.get(family, 0.0) + us
    whole = sum(totals.values()) or 1.0
    kind = "device" if gpu else "CPU (self)"
    split = ", ".join(f"{f} {us / 1e3:.1f} ms ({100 * us / whole:.0f}%)" for f, us in sorted(totals.items()))
    print(f"split of {kind} time by op family (name heuristics): {split}\n", flush=True)


def run_seed(case: Case) -> dict[str, Any]:
    """The seed's step on a synthetic batch: same model and item sizes, plain fused AdamW, no EMA or clip."""
    from vecset.model.vecset import VecSetAutoEncoder

    from seed_baseline import seed_attention, seed_loss, synthetic_batch

    plan = bench_plan(case, case.batch)
    device = torch.device(case.device)
    cap_memory(case, device)
    torch.set_num_threads(plan.train.torch_threads(device.type == "cuda"))
    torch.manual_seed(0)
    model = VecSetAutoEncoder(plan.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch = synthetic_batch(plan, case.batch, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"), seed_attention():
            loss = seed_loss(model, batch, plan.train.n_eikonal)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    for _ in range(case.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(case.steps):
        started = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - started)
    alloc, reserved = peak_memory(device)
    median = statistics.median(times)
    return {
        "params_m": plan.parameters / 1e6,
        "warmup_s": warmup_s,
        "step_s": median,
        "samples_per_s": case.batch / median,
        "peak_gb": alloc,
        "reserved_gb": reserved,
    }


def run_save(case: Case) -> dict[str, Any]:
    """One RunState.save (state/last.pt: weights, EMA, AdamW moments, RNG) and one save_inference (best.pt)."""
    from vecset.train import distributed
    from vecset.train.state import RunState

    plan = bench_plan(case, case.batch)
    with distributed.ranks(plan.train.device) as ranks:
        run = RunState(plan, "bench", ranks.device)
        for p in run.model.parameters():  # one update with zero gradients: AdamW's moments exist, as in a run
            p.grad = torch.zeros_like(p)
        run.step(1e-12)
        sync(ranks.device)
        folder = Path(tempfile.mkdtemp(prefix="vecset-save-", dir=case.save_dir or None))
        try:
            result: dict[str, Any] = {"params_m": plan.parameters / 1e6, "predicted_gb": plan.checkpoint_bytes / 1e9}
            for name, save in (("last", run.save), ("best", run.save_inference)):
                path = folder / f"{name}.pt"
                started = time.perf_counter()
                save(path)  # torch.save to a temp file, fsync, rename (vecset.atomic)
                result[f"{name}_s"] = time.perf_counter() - started
                result[f"{name}_gb"] = path.stat().st_size / 1e9
            result["folder"] = str(folder.parent)
            return result
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def child(case_json: str, result_path: str) -> None:
    """Run one configuration and write its result (or its out-of-memory / error) as JSON."""
    global torch
    import torch  # here, for every function of the child: the parent never imports torch (it only starts children)

    case = Case(**json.loads(case_json))
    if case.compile_backend != "inductor":  # Module.compile calls torch.compile, which then takes this backend
        torch.compile = functools.partial(torch.compile, backend=case.compile_backend)
    runner = {"save": run_save}.get(case.mode) or (run_ours if case.route == "ours" else run_seed)
    try:
        result = runner(case)
    except torch.OutOfMemoryError:
        result = {"oom": True}
    except Exception as err:
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {err}"[:300]}
    Path(result_path).write_text(json.dumps(result))


# --- the parent: one process per configuration, one table ---------------------------------------------------


def isolated(case: Case, timeout: float | None) -> dict[str, Any]:
    """A configuration in a fresh process; a crash, a kill or a timeout becomes that row's error."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(dataclasses.asdict(case))]
        try:
            rc = subprocess.run([*command, "--result", str(out)], timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:g} s"}
        if out.exists():
            return json.loads(out.read_text())
        return {"error": f"process ended with exit code {rc} and no result"}


def fmt(value: Any, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec) + suffix


def table(rows: list[tuple[Case, dict[str, Any]]]) -> str:
    head = ["preset", "params (M)", "batch", "route", "workers", "input", "variant", "warm-up (s)", "step (s)",
            "samples/s", "data wait", "item (ms)", "loader cap/s", "peak alloc/resv (GB)", "MFU bf16",
            "ours vs seed"]  # fmt: skip
    lines = [head]
    seeds = {(c.preset, c.batch): r for c, r in rows if c.route == "seed"}
    for case, r in rows:
        ours = case.route == "ours"
        first = [case.preset, fmt(r.get("params_m"), ".1f"), str(case.batch), case.route,
                 str(r.get("workers", case.workers if case.workers is not None else "auto")) if ours else "—",
                 case.sampling if ours else "synthetic", case.variant if ours else "-"]  # fmt: skip
        if "oom" in r or "error" in r:
            lines.append([*first, "out of memory" if "oom" in r else f"error: {r['error']}", *[""] * 8])
            continue
        speed = "—"
        seed = seeds.get((case.preset, case.batch))
        if ours and seed and "step_s" in seed:
            speed = f"{seed['step_s'] / r['step_s']:.2f}x faster, {seed['peak_gb'] / r['peak_gb']:.2f}x less mem"
        elif ours and seed:
            speed = "seed: " + ("out of memory" if "oom" in seed else "error")
        lines.append([*first, fmt(r["warmup_s"], ".1f"), fmt(r["step_s"], ".3f"), fmt(r["samples_per_s"], ".2f"),
                      fmt(100 * r["data_wait"], ".1f", "%") if ours else "—", fmt(r.get("item_ms"), ".1f"),
                      fmt(r.get("loader_cap"), ".1f"), f"{r['peak_gb']:.2f} / {r['reserved_gb']:.2f}",
                      fmt(100 * r["mfu"], ".1f", "%") if ours else "—", speed])  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def linear_fit(points: dict[int, float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (batch, GiB)."""
    xs, ys = list(points), list(points.values())
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def max_batch(base: Case, measured: dict[int, float], limits_gb: list[float], timeout: float | None) -> Iterator[str]:
    """Lines on the largest batch within each limit, each as soon as it is known: a line through the measured peaks
    (reserved GiB) predicts it, then on CUDA one run under that memory cap (set_per_process_memory_fraction) checks
    it, stepping down on OOM."""
    quick = dataclasses.replace(base, steps=2, warmup=1, drain=False, profile=False)
    for extra in (4, 8):  # at least two batch sizes for the line
        if len(measured) >= 2:
            break
        if extra not in measured:
            r = isolated(dataclasses.replace(quick, batch=extra), timeout)
            if "reserved_gb" in r:
                measured[extra] = r["reserved_gb"]
    if len(measured) < 2:
        yield f"{base.preset}: largest batch not found (fewer than two batch sizes ran)"
        return
    intercept, slope = linear_fit(measured)
    if slope <= 0:
        yield f"{base.preset}: peak memory does not grow with the batch ({measured}); no largest batch predicted"
        return
    yield (
        f"{base.preset} ({base.variant}, {base.sampling} input): peak reserved ≈ {intercept:.2f} + {slope:.3f} × batch"
        f" GiB (fit to batches {sorted(measured)})"
    )
    for limit in limits_gb:
        batch = max(1, math.floor((limit - intercept) / slope))
        if base.device != "cuda":
            yield f"  within {limit:g} GiB: batch {batch} (predicted; no cap to check against on the CPU)"
            continue
        yield checked_batch(quick, batch, limit, timeout)


def checked_batch(quick: Case, batch: int, limit: float, timeout: float | None) -> str:
    """The predicted ``batch`` run under a ``limit`` GiB cap, about 10 % smaller on each out-of-memory (4 tries)."""
    predicted, tried = batch, list[str]()
    for _ in range(4):
        log(f"  batch {batch} under a {limit:g} GiB cap …")
        r = isolated(dataclasses.replace(quick, batch=batch, memory_gb=limit), timeout)
        if "step_s" in r:
            return (
                f"  largest batch within {limit:g} GiB: {batch} (predicted {predicted}; ran under a {limit:g} GiB "
                f"cap, peak reserved {r['reserved_gb']:.1f} GiB; failed: {tried or 'none'})"
            )
        tried.append(f"{batch} " + ("out of memory" if "oom" in r else r.get("error", "failed")))
        if batch == 1:
            break
        batch = max(1, batch - max(1, batch // 10))
    return f"  largest batch within {limit:g} GiB: not found (predicted {predicted}; failed: {tried})"


def save_lines(preset: str, r: dict[str, Any]) -> list[str]:
    if "last_s" not in r:
        return [f"checkpoint save {preset}: " + ("out of memory" if "oom" in r else f"error: {r.get('error')}")]
    return [
        f"checkpoint save {preset} ({r['params_m']:.0f} M parameters) to {r['folder']}: "
        f"last.pt {r['last_gb']:.2f} GB in {r['last_s']:.1f} s ({r['last_gb'] / r['last_s']:.2f} GB/s; "
        f"plan.checkpoint_bytes says {r['predicted_gb']:.2f} GB), "
        f"best.pt {r['best_gb']:.2f} GB in {r['best_s']:.1f} s"
    ]


def comma_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--presets", default="tiny")
    p.add_argument("--batch-sizes", default="2,4")
    p.add_argument("--routes", default="ours,seed", help="ours (the trainer's step), seed (synthetic baseline)")
    p.add_argument("--workers", default="auto", help="DataLoader workers, comma list; auto: train.loader_workers")
    p.add_argument("--input-sampling", default="uniform", help="comma list of uniform, fps")
    p.add_argument("--compile", action="store_true", help="train.compile: torch.compile the objective")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile's backend: inductor (the trainer's), aot_eager (traces and checks the graph "
                   "without generating code: CPU smoke runs)")  # fmt: skip
    p.add_argument("--activation-checkpointing", action="store_true", help="train.activation_checkpointing")
    p.add_argument("--items", default="production", choices=["production", "demo"],
                   help=f"production: config/imagecas.yaml's {PRODUCTION_RUN} run; demo: config/config.yaml's demo run"
                   " (their model, items, loss, optimizer and CPUs per rank)")  # fmt: skip
    p.add_argument("--samples", default=str(REPO / "results" / "samples"), help="folder of sample .npz files")
    p.add_argument("--cpus", type=int, default=0, help="train.resources.cpus_per_rank (0: the run's own)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (torch.compile compiles here)")
    drain = "also leave untimed the workers × prefetch batches the loader may have queued meanwhile"
    p.add_argument("--drain", action=argparse.BooleanOptionalAction, default=True, help=drain)
    p.add_argument("--memory-gb", type=float, default=None, help="cap the CUDA allocator at this many GiB")
    p.add_argument("--max-batch", action="store_true", help="the largest batch within each --limits-gb")
    p.add_argument("--limits-gb", default="38,78",
                   help="GiB for --max-batch: 40 and 80 GB cards less the CUDA context and driver reserve")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one more step")
    p.add_argument("--save", action="store_true", help="time one RunState.save per preset instead of steps")
    p.add_argument("--save-dir", default="", help="where --save writes (default: the temp folder)")
    p.add_argument("--case-timeout", type=float, default=None, help="seconds per configuration")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's dense bf16 peak")
    smoke = "CPU smoke run: the tiny preset with the production run's items, batch 2, 2 CPUs, 2 steps"
    p.add_argument("--smoke", action="store_true", help=smoke)
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.presets, args.batch_sizes, args.cpus, args.steps, args.warmup = "cpu", "tiny", "2", 2, 2, 1
    return args


def row_line(case: Case, r: dict[str, Any]) -> str:
    """One configuration's figures as soon as it has run (the table follows when all have)."""
    what = f"{case.preset} batch {case.batch} {case.route}"
    if case.route == "ours":
        what += f" ({r.get('workers', case.workers)} workers, {case.sampling} input, {case.variant})"
    if "oom" in r or "error" in r:
        return f"{what}: " + ("out of memory" if "oom" in r else f"error: {r['error']}")
    line = f"{what}: {r['samples_per_s']:.2f} samples/s, step {r['step_s']:.3f} s, peak {r['peak_gb']:.2f} GiB"
    if case.route == "ours":
        line += f", data wait {100 * r['data_wait']:.1f}%, MFU {fmt(100 * r['mfu'], '.1f', '%')}"
    return line


def summary(rows: list[tuple[Case, dict[str, Any]]]) -> str:
    done = [(c, r) for c, r in rows if c.route == "ours" and "samples_per_s" in r]
    if not done:
        return "train step: no configuration of the trainer's step ran"
    c, r = max(done, key=lambda cr: cr[1]["samples_per_s"])
    variant = "" if c.variant == "-" else f", {c.variant}"
    seed = next((s for k, s in rows if k.route == "seed" and (k.preset, k.batch) == (c.preset, c.batch)), {})
    return (
        f"train step {c.preset} batch {c.batch} ({r['workers']} workers, {c.sampling} input{variant}): "
        f"{r['samples_per_s']:.2f} samples/s, data wait {100 * r['data_wait']:.1f}%"
        + (f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] == r["mfu"] else "")
        + (f", {r['samples_per_s'] / seed['samples_per_s']:.2f}x the seed's" if "samples_per_s" in seed else "")
    )


class Interrupted(Exception):
    """SIGTERM (e.g. from `timeout`) in the parent: stop starting configurations, print what finished."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def configurations(args: argparse.Namespace, base: dict[str, Any]) -> Iterator[Case]:
    workers = [None if w == "auto" else int(w) for w in comma_list(args.workers)]
    for preset in comma_list(args.presets):
        for batch in (int(b) for b in comma_list(args.batch_sizes)):
            for route in comma_list(args.routes):
                if route == "seed":  # synthetic: workers, sampling and the trainer's options do not apply
                    yield Case("seed", preset, batch, workers=0, sampling="uniform", **base)
                    continue
                for sampling in comma_list(args.input_sampling):
                    for w in workers:
                        yield Case("ours", preset, batch, workers=w, sampling=sampling, **base)


def largest_batches(args: argparse.Namespace, rows: list[tuple[Case, dict[str, Any]]]) -> None:
    """--max-batch: per preset, from the rows of its first configuration's workers and sampling."""
    for preset in comma_list(args.presets):
        ours = [(c, r) for c, r in rows if c.preset == preset and c.route == "ours"]
        if not ours:
            continue
        like = ours[0][0]
        measured = {
            c.batch: r["reserved_gb"]
            for c, r in ours
            if "reserved_gb" in r and (c.workers, c.sampling) == (like.workers, like.sampling)
        }
        limits = [float(x) for x in comma_list(args.limits_gb)]
        for line in max_batch(like, measured, limits, args.case_timeout):
            print(line, flush=True)


def notes(args: argparse.Namespace, rows: list[tuple[Case, dict[str, Any]]], seconds: float) -> str:
    first = next((r for _, r in rows if "items" in r), None)
    device_name = next((r["device_name"] for _, r in rows if "device_name" in r), args.device)
    cpus = next((r["cpus_per_rank"] for _, r in rows if "cpus_per_rank" in r), args.cpus or "?")
    items, cost = "?", ""
    if first:
        shown = [k for k in first["items"] if k.startswith("n_") and k != "n_val_vol"] + ["rotate_deg", "scale_jitter"]
        items = ", ".join(f"{k} {first['items'][k]}" for k in shown) + f"; model {args.presets} with {first['model']}"
        cost = (
            f"plan.flops_per_sample {first['flops_per_sample'] / 1e12:.3f} TFLOP, dense bf16 peak "
            f"{fmt(first['peak_tflops'], 'g')} TFLOP/s; "
        )
    return (
        f"\nnotes: {device_name}; {args.items} items ({items}); {cost}{cpus} CPUs per rank; median step of "
        f"{args.steps} timed steps after {args.warmup} warm-up"
        + (" (+ workers × prefetch batches to drain the loader's queue)" if args.drain else "")
        + f"; {seconds:.0f} s in all. ours = the trainer's train_step on real sample files "
        "(loader, H2D, encoder_inputs, forward/backward, all-reduce + host sync, clip, fused AdamW on CUDA, EMA); "
        "step (s) = median time between step returns; samples/s = batch × steps / timed wall time; data wait = "
        "EpochMeter.data_wait / timed wall time (next batch + copy to the device + encoder_inputs, FPS included "
        "where it syncs); item (ms) = one item built in the main process, loader cap = workers / item time; "
        "seed = synthetic batch, manual attention + autograd eikonal (create_graph=True, one gradient), plain "
        "AdamW, no loader/EMA/clip; peak = max CUDA allocated / reserved in the timed steps (GiB), or the process's "
        "peak RSS on CPU; MFU = plan.flops_per_sample (model FLOPs, fwd+bwd, no recompute) × samples/s / dense "
        "bf16 peak; bf16 autocast on CUDA."
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[3])
        return
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    base = dict(device=args.device, steps=args.steps, warmup=args.warmup, compile=args.compile,
                checkpointing=args.activation_checkpointing, items=args.items, samples=args.samples, cpus=args.cpus,
                memory_gb=args.memory_gb, drain=args.drain, profile=args.profile, save_dir=args.save_dir,
                peak_tflops=args.peak_tflops, compile_backend=args.compile_backend)  # fmt: skip
    if args.save:
        batch = int(comma_list(args.batch_sizes)[0])
        for preset in comma_list(args.presets):
            log(f"{preset}: one checkpoint save …")
            case = Case("ours", preset, batch, workers=0, sampling="uniform", mode="save", **base)
            print("\n".join(save_lines(preset, isolated(case, args.case_timeout))), flush=True)
        return
    rows: list[tuple[Case, dict[str, Any]]] = []
    printed = False
    try:
        for case in configurations(args, base):
            what = f"{case.preset} batch {case.batch} {case.route}"
            if case.route == "ours":
                what += f", {case.sampling} input, workers {'auto' if case.workers is None else case.workers}"
            log(what + " …")
            rows.append((case, isolated(case, args.case_timeout)))
            print(row_line(*rows[-1]), flush=True)
        print(table(rows), flush=True)
        printed = True
        if args.max_batch:
            largest_batches(args, rows)
    except (Interrupted, KeyboardInterrupt) as err:
        log(f"interrupted ({err or 'SIGINT'}): what finished follows")
        if not printed:
            print(table(rows), flush=True)
    print(notes(args, rows, time.perf_counter() - started))
    print(summary(rows))


if __name__ == "__main__":
    main()
