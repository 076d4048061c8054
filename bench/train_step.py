"""Training-step benchmark: ours (fused SDPA + finite-difference eikonal) against the seed's configuration
(manual attention + autograd eikonal with create_graph=True), per preset and batch size, in the same run.

Every configuration runs in a fresh process (so peak memory is its own, and an out-of-memory error only ends
that configuration). Batches are synthetic (random points, one-hot labels, SDF targets): data loading is not
part of a step. Prints one table; see bench/README.md for the recorded runs.

    python bench/train_step.py                                   # CPU: tiny and small presets
    python bench/train_step.py --device cuda --presets upstream --batch-sizes 2,4,8,16,24,32 --n-input 8192
    python bench/train_step.py --device cuda --presets upstream --max-batch   # largest batch in 40 / 78 GB
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vecset.model import vecset as vecset_module
from vecset.model.vecset import VecSetAutoEncoder, count_parameters
from vecset.settings import LossWeights, preset_config
from vecset.train.losses import eikonal_term, masked_l1, surface_term
from vecset.train.objective import Objective

N_CLASSES = 10
# Dense bf16 peak of the GPUs we may get (TFLOP/s); MFU = counted model FLOPs per second / this.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


@dataclass(frozen=True)
class Case:
    route: str  # "ours" or "seed"
    preset: str
    batch: int
    n_input: int
    n_query: int
    n_eikonal: int
    device: str
    steps: int
    warmup: int


def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **_: object) -> torch.Tensor:
    """The seed's attention: the full (B, H, Nq, Nk) matrix in memory (its fix for the double-backward error)."""
    weights = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return weights.softmax(dim=-1) @ v


@contextlib.contextmanager
def seed_attention() -> Iterator[None]:
    original = vecset_module.F.scaled_dot_product_attention
    vecset_module.F.scaled_dot_product_attention = manual_attention
    try:
        yield
    finally:
        vecset_module.F.scaled_dot_product_attention = original


def synthetic_batch(case: Case, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b = case.batch
    labels = torch.randint(0, N_CLASSES, (b, case.n_input), generator=g)
    batch = {
        "surface": torch.cat([torch.rand(b, case.n_input, 3, generator=g) * 2 - 1, F.one_hot(labels, N_CLASSES)], -1),
        "points": torch.rand(b, case.n_query, 3, generator=g) * 2 - 1,
        "sdf": torch.randn(b, case.n_query, N_CLASSES, generator=g) * 0.2,
        "n_vol": torch.full((b,), case.n_query // 2),
        "surface_points": torch.rand(b, 1024, 3, generator=g) * 2 - 1,
        "surface_labels": torch.randint(0, N_CLASSES, (b, 1024), generator=g),
        "present": torch.ones(b, N_CLASSES, dtype=torch.bool),
    }
    return {k: v.float().to(device) if v.is_floating_point() else v.to(device) for k, v in batch.items()}


def seed_loss(model: VecSetAutoEncoder, batch: dict[str, torch.Tensor], n_eikonal: int) -> torch.Tensor:
    """The seed's objective: same data terms, eikonal by autograd with create_graph=True (double backward)."""
    points = batch["points"].clone().requires_grad_(True)
    n_vol, n_query = int(batch["n_vol"][0]), points.shape[1]
    z, _ = model.encode(batch["surface"])
    context = model.latent_context(z)
    pred = model.query(context, torch.cat([points, batch["surface_points"]], dim=1)).float()
    loss = masked_l1(pred[:, :n_vol], batch["sdf"][:, :n_vol], batch["present"])
    loss = loss + masked_l1(pred[:, n_vol:n_query], batch["sdf"][:, n_vol:n_query], batch["present"])
    loss = loss + surface_term(pred[:, n_query:], batch["surface_labels"])
    # One gradient, as for the seed's single union-SDF channel (ours gets all C channels' gradients).
    eik = pred[:, n_vol : n_vol + n_eikonal].min(dim=-1).values
    gradient = torch.autograd.grad(eik.sum(), points, create_graph=True)[0][:, n_vol : n_vol + n_eikonal, None]
    return loss + 0.1 * eikonal_term(gradient, batch["present"][:, :1])


def run_case(case: Case) -> dict[str, float]:
    device = torch.device(case.device)
    torch.manual_seed(0)
    model = VecSetAutoEncoder(preset_config(case.preset, N_CLASSES)).to(device)
    objective = Objective(model, LossWeights(), eikonal_step=0.01, n_eikonal=case.n_eikonal)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch = synthetic_batch(case, device)
    amp = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if case.route == "seed":
                with seed_attention():
                    loss = seed_loss(model, batch, case.n_eikonal)
            else:
                loss, _ = objective(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    try:
        for _ in range(case.warmup):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(case.steps):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        flops = count_flops(step) if device.type == "cuda" else math.nan
    except torch.OutOfMemoryError:
        return {"oom": 1.0}
    peak_gb = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    median = statistics.median(times)
    return {
        "step_s": median,
        "samples_per_s": case.batch / median,
        "peak_gb": peak_gb,
        "params_m": count_parameters(model) / 1e6,
        "tflops_per_step": flops / 1e12,
    }


def count_flops(step: object) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def isolated(case: Case) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        try:
            return pool.apply(run_case, (case,))
        except Exception as err:  # a crash in one configuration must not end the table
            return {"error": 1.0, "message": str(err)[:200]}  # type: ignore[dict-item]


def peak_tflops(device: str, override: float | None) -> float:
    if override:
        return override
    if device != "cuda" or not torch.cuda.is_available():
        return math.nan
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), math.nan)


def fmt(value: float, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def table(rows: list[tuple[Case, dict[str, float]]], peak: float) -> str:
    head = ["preset", "params (M)", "batch", "route", "step (s)", "samples/s", "peak mem (GB)", "MFU bf16",
            "ours vs seed"]  # fmt: skip
    lines = [head]
    by_key = {(c.preset, c.batch, c.route): r for c, r in rows}
    for case, r in rows:
        if "oom" in r or "error" in r:
            status = "out of memory" if "oom" in r else f"error: {r.get('message', '')}"
            lines.append([case.preset, "", str(case.batch), case.route, status, "", "", "", ""])
            continue
        mfu = r["tflops_per_step"] / r["step_s"] / peak if peak == peak else math.nan
        other = by_key.get((case.preset, case.batch, "seed"))
        speed = "—"
        if case.route == "ours" and other and "step_s" in other:
            speed = f"{other['step_s'] / r['step_s']:.2f}x faster, {other['peak_gb'] / r['peak_gb']:.2f}x less mem"
        elif case.route == "ours" and other:
            speed = "seed out of memory"
        lines.append([
            case.preset, f"{r['params_m']:.1f}", str(case.batch), case.route, fmt(r["step_s"], ".3f"),
            fmt(r["samples_per_s"], ".2f"), fmt(r["peak_gb"], ".2f"),
            fmt(mfu * 100, ".1f") + ("%" if mfu == mfu else ""), speed,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def max_batch(base: Case, limits_gb: tuple[float, ...]) -> list[str]:
    """Largest batch whose peak memory fits each limit: doubling, then bisection, one process per try."""
    fits: dict[int, float] = {}

    def peak(b: int) -> float:
        if b not in fits:
            r = isolated(Case(**{**base.__dict__, "batch": b, "steps": 2, "warmup": 1}))
            fits[b] = r.get("peak_gb", math.inf)
            log(f"  batch {b}: peak {fits[b]:.1f} GB")
        return fits[b]

    results = []
    for limit in limits_gb:
        lo, hi = 0, 1
        while peak(hi) <= limit:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if peak(mid) <= limit else (lo, mid)
        results.append(f"{base.route} {base.preset}: largest batch within {limit:g} GB = {lo}"
                       + (f" (peak {fits[lo]:.1f} GB)" if lo else ""))  # fmt: skip
    return results


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--batch-sizes", default="1,4,8")
    p.add_argument("--routes", default="ours,seed")
    p.add_argument("--n-input", type=int, default=2048, help="surface points per item into the encoder")
    p.add_argument("--n-query", type=int, default=2048, help="SDF query points per item (half volume, half near)")
    p.add_argument("--n-eikonal", type=int, default=512, help="points per item in the eikonal term")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-batch", action="store_true", help="search the largest batch within 40 and 78 GB")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's dense bf16 peak")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(torch.get_num_threads())
    rows = []
    for preset in args.presets.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for route in args.routes.split(","):
                case = Case(route, preset, batch, args.n_input, args.n_query, args.n_eikonal, args.device,
                            args.steps, args.warmup)  # fmt: skip
                log(f"{preset} batch {batch} {route} …")
                rows.append((case, isolated(case)))
    print(table(rows, peak_tflops(args.device, args.peak_tflops)))
    if args.max_batch:
        for preset in args.presets.split(","):
            for route in args.routes.split(","):
                base = Case(route, preset, 1, args.n_input, args.n_query, args.n_eikonal, args.device, 2, 1)
                for line in max_batch(base, (40.0, 78.0)):
                    print(line)
    print(
        f"\nnotes: {args.device}; {args.n_input} input points, {args.n_query} SDF queries + 1024 surface points, "
        f"eikonal on {args.n_eikonal} points per item; median of {args.steps} steps after {args.warmup} warm-up; "
        "ours = SDPA + finite-difference eikonal (6 extra fp32 decoder queries per point), seed = manual attention "
        "+ autograd eikonal (create_graph=True, one gradient: the seed had one union-SDF channel); "
        "bf16 autocast on CUDA; peak mem = max CUDA allocated, or the "
        "process's peak RSS on CPU; MFU = FLOPs counted by torch.utils.flop_counter for one step / step time / "
        "the GPU's dense bf16 peak."
    )


if __name__ == "__main__":
    main()
