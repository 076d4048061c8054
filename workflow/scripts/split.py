"""Write the train/val split CSVs (rule split)."""

import logging
from pathlib import Path

from vecset.data.split import write_split
from vecset.settings import SplitSettings, build
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake


def split() -> None:
    counts = write_split(
        sample_paths=dict(zip(sm.params.cases, map(Path, sm.input.samples), strict=True)),
        outputs=[Path(p) for p in sm.output.csvs],
        excluded={case: "in 'exclude' of the workflow config" for case in sm.params.excluded} | dict(sm.params.skipped),
        excluded_path=Path(sm.output.excluded),
        settings=build(SplitSettings, sm.params.split),
        seed=sm.params.seed,
    )
    for folder, (n_train, n_val) in counts.items():
        logging.getLogger("vecset").info("%s: %d training, %d validation cases", folder, n_train, n_val)


run_job(sm.log[0], split, outputs=list(sm.output))
