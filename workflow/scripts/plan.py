"""Write one run's resolved settings and what they imply (rule plan)."""

import logging

from vecset.plan import write_plan
from vecset.settings import RunSettings, TrainSettings, build
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
plan = run_job(
    sm.log[0],
    write_plan,
    outputs=list(sm.output),
    run=RunSettings(sm.wildcards.run, build(TrainSettings, sm.params.train), sm.params.fold),
    seed=sm.params.seed,
    class_names=list(sm.params.class_names),
    train_csv=sm.input.train,
    val_csv=sm.input.val,
    out=sm.output.settings,
)
logging.getLogger("vecset").info("run %s: %s", plan.run, plan.implied())
