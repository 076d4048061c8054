"""Demo sample files without Snakemake, for benchmarks on a machine that has only ``python3`` (bench/gpu.sh): each
case a phantom label map (vecset.data.phantom.write_phantom, the demo_case rule's function) turned into its sample
file by vecset.data.preprocess.preprocess_case (the mesh and sample rules' functions) under the workflow's default
config, several cases at once in processes (at most the CPUs minus two).

    python3 bench/make_samples.py OUT --cases 16     # 16 demo cases into OUT/demo_000.npz ...
    python3 bench/make_samples.py OUT --smoke        # CPU smoke run (tests/test_benches.py): 2 cases, fewer points

The last line: `sample files: <N> in <OUT> (<S> s, <P> processes)`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from vecset.config import validate_config
from vecset.data.phantom import write_phantom
from vecset.data.preprocess import preprocess_case
from vecset.settings import Config, build

from benchlib import spare_cpus

# Smoke sizes: enough surface points for the production item's 8192 encoder inputs, a tenth of the SDF queries.
SMOKE_SAMPLES = {"n_surface": 10_000, "n_volume": 4_000, "n_near": 4_000}


def make_case(index: int, out: str, config: Config) -> str:
    """Demo case ``index``: its label map (as the demo_case rule writes it) and its sample file ``out``/<case>.npz."""
    case = f"demo_{index:03d}"
    with tempfile.TemporaryDirectory(prefix=f"vecset-{case}-") as work:
        labels = Path(work) / f"{case}.nii.gz"
        write_phantom(labels, [config.seed, index], dict(config.labels), config.demo.size)
        preprocess_case(labels, case, Path(out) / f"{case}.npz", config)
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for the sample files")
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--processes", type=int, default=None, help="at most this many (default: the CPUs minus 2)")
    parser.add_argument("--smoke", action="store_true", help=f"2 cases with {SMOKE_SAMPLES}")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {"samples": SMOKE_SAMPLES} if args.smoke else {}
    config = build(Config, validate_config(values))
    cases = 2 if args.smoke else args.cases
    processes = max(1, min(args.processes or spare_cpus(), spare_cpus(), cases))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # fork: the children start at once with the package imported (the parent has not started any thread)
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        done = list(pool.map(make_case, range(cases), [str(args.out)] * cases, [config] * cases))
    seconds = time.perf_counter() - started
    print(f"sample files: {len(done)} in {args.out} ({seconds:.0f} s, {processes} processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
