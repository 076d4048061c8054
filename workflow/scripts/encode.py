"""Write every case's latent set for one run (rule encode)."""

from pathlib import Path

import torch

from vecset.data.split import read_split_csv
from vecset.eval.latents import encode_cases
from vecset.settings import EvalSettings, build
from vecset.snakemake_adapter import run_job

sm = snakemake  # noqa: F821 - injected by Snakemake
torch.set_num_threads(sm.threads)
run_job(
    sm.log[0],
    encode_cases,
    outputs=list(sm.output),
    plan_path=Path(sm.input.settings),
    checkpoint=Path(sm.input.checkpoint),
    train_cases=read_split_csv(sm.input.train),
    val_cases=read_split_csv(sm.input.val),
    out_dir=Path(sm.output.latents),
    settings=build(EvalSettings, sm.params.eval),
)
