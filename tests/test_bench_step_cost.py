"""bench/step_cost.py: real steps of each variant on real sample files, the defaults first and every ratio to them."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_step_cost_prices_each_variant_against_the_shipped_defaults(sample_dir):
    variants = '{"batch 1, width 64": {"batch_size": 1, "model": {"width": 64}}}'
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "step_cost.py"), "--samples", str(sample_dir / "samples"),
         "--rounds", "2", "--threads", "1", "--variants", variants],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {
        m.group(1).strip(): (float(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"^(.+?)\s+([\d.]+)\s+\d+\s+([\d.]+)$", done.stdout, re.MULTILINE)
    }
    assert rows["shipped defaults"] == (0.88, 1.0)  # the tiny preset without the decoder feed-forward
    params, ratio = rows["batch 1, width 64"]
    assert params < 0.5 and ratio > 0  # its own model (a quarter of the width), timed (no timing asserted)
