"""Run one training job (rule train): torchrun on this job's nodes, stop signals passed on, its exit status
returned (vecset.train.launch, vecset.preemption)."""

import sys
from pathlib import Path

from vecset.train.launch import run_training_job

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.exit(
    run_training_job(
        plan_path=sm.input.settings,
        train_csv=sm.input.train,
        val_csv=sm.input.val,
        state_dir=sm.params.state_dir,
        out_dir=Path(sm.output.best).parent,
        log_path=sm.log[0],
    )
)
