"""Command-line entry of one training run; ``torchrun`` starts one of these per rank.

    torchrun --standalone --nproc_per_node=2 -m vecset.train.run --plan results/train/demo/settings.json \\
        --train-csv results/splits/train.csv --val-csv results/splits/val.csv \\
        --state-dir results/train/demo/state --out-dir results/train/demo

The plan (settings.json, written by the workflow's plan rule or vecset.plan.write_plan) holds every setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vecset.data.split import read_split_csv
from vecset.errors import known_failure
from vecset.model.items import SampleFileError
from vecset.plan import RunPlan
from vecset.train.loop import NonFiniteLossError
from vecset.train.state_lock import StateInUseError
from vecset.train.trainer import RunPaths, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, required=True, help="the run's settings.json")
    parser.add_argument("--train-csv", type=Path, required=True)
    parser.add_argument("--val-csv", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="resumable state (not a workflow output)")
    parser.add_argument("--out-dir", type=Path, required=True, help="where checkpoint-{best,last}.pt go at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = RunPlan.read(args.plan)
        train_cases, val_cases = read_split_csv(args.train_csv), read_split_csv(args.val_csv)
        if not train_cases or not val_cases:
            raise ValueError(f"empty split: {len(train_cases)} training and {len(val_cases)} validation cases")
        if (plan.train_cases, plan.val_cases) != (len(train_cases), len(val_cases)):
            raise ValueError(
                f"{args.plan} was planned for {plan.train_cases} training and {plan.val_cases} validation cases, "
                f"the split has {len(train_cases)} and {len(val_cases)}; rerun the workflow to rewrite the plan"
            )
        return train(plan, train_cases, val_cases, RunPaths(args.state_dir, args.out_dir))
    except (SampleFileError, NonFiniteLossError, StateInUseError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except (OSError, RuntimeError) as err:
        reason = known_failure(err, args.state_dir)
        if reason is None:
            raise  # unexpected: its traceback goes to the job's log
        print(f"error: run state {args.state_dir}: {reason}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
