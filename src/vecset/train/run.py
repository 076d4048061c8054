"""Command-line entry of one training run; ``torchrun`` starts one of these per rank.

    torchrun --standalone --nproc_per_node=2 -m vecset.train.run --settings '{...}' \\
        --train-csv results/splits/train.csv --val-csv results/splits/val.csv \\
        --state-dir results/train/demo/state --out-dir results/train/demo --run-name demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vecset.data.split import read_split_csv
from vecset.train.dataset import SampleFileError
from vecset.train.settings import TrainSettings
from vecset.train.trainer import NonFiniteLossError, RunPaths, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", required=True, help="train settings as JSON (a string, or @file.json)")
    parser.add_argument("--train-csv", type=Path, required=True)
    parser.add_argument("--val-csv", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="resumable state (not a workflow output)")
    parser.add_argument("--out-dir", type=Path, required=True, help="where checkpoint-{best,last}.pt go at the end")
    # Not "--run": torchrun would take it for a prefix of its own --run-path.
    parser.add_argument("--run-name", default="run", help="run name, for logs and wandb")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = Path(args.settings[1:]).read_text() if args.settings.startswith("@") else args.settings
    try:
        settings = TrainSettings.from_dict(json.loads(text))
        train_cases = read_split_csv(args.train_csv)
        val_cases = read_split_csv(args.val_csv)
        if not train_cases or not val_cases:
            raise ValueError(f"empty split: {len(train_cases)} training and {len(val_cases)} validation cases")
        paths = RunPaths(
            state_dir=args.state_dir,
            checkpoint_best=args.out_dir / "checkpoint-best.pt",
            checkpoint_last=args.out_dir / "checkpoint-last.pt",
            metrics=args.out_dir / "metrics.jsonl",
        )
        return train(settings, train_cases, val_cases, paths, run_name=args.run_name)
    except (SampleFileError, NonFiniteLossError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
