"""Launch one training run under torchrun (rule train): one rank per GPU, or the configured CPU ranks, on one
node, or on several nodes through srun (vecset.train.launch).

SIGTERM and SIGUSR1 (SLURM's --signal=USR1@T) reach torchrun as SIGTERM, and torchrun handles SIGUSR1 itself
too (TORCHELASTIC_SIGNALS_TO_HANDLE), since SLURM signals every process of the job step; the ranks stop at
the next step, rank 0 saves, and the job exits non-zero so it is retried and resumes. torchrun waits
TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (here 120 unless set) before killing the ranks.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from vecset.train.launch import SIGNALS_TO_HANDLE, slurm_allocation, torchrun_command

sm = snakemake  # noqa: F821 - injected by Snakemake
trainer_args = [
    "--settings", sm.params.settings,
    "--train-csv", sm.input.train,
    "--val-csv", sm.input.val,
    "--state-dir", sm.params.state_dir,
    "--out-dir", str(Path(sm.output.best).parent),
    "--run-name", sm.wildcards.run,
]  # fmt: skip
env = dict(os.environ)
# The package is importable from this folder (workflow/scripts/vecset links to src/vecset).
env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")]))
env.setdefault("OMP_NUM_THREADS", str(max(1, sm.threads // int(sm.params.ranks))))
env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "120")
env.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", SIGNALS_TO_HANDLE)
allocation = slurm_allocation(env) if sm.params.nodes > 1 else None
command = torchrun_command(sm.params.ranks, sm.params.nodes, trainer_args, sm.params.gpus, allocation)
Path(sm.log[0]).parent.mkdir(parents=True, exist_ok=True)
with open(sm.log[0], "a") as log:
    job = env.get("SLURM_JOB_ID")
    print(f"train {sm.wildcards.run}: {sm.params.nodes} node(s) × {sm.params.ranks} rank(s)"
          + (f", SLURM job {job} on {socket.gethostname()}" if job else ""), file=log, flush=True)  # fmt: skip
    if sm.params.gpus and shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "-L"], stdout=log, stderr=subprocess.STDOUT, check=False)
    print(" ".join(command), file=log, flush=True)
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: child.send_signal(signal.SIGTERM))
    code = child.wait()
sys.exit(code)
