"""Launch one training run under torchrun (rule train): one rank per GPU, or the configured CPU ranks.

SIGTERM and SIGUSR1 (SLURM's --signal=USR1@90) reach torchrun as SIGTERM, which every torch version passes
to the ranks; they stop at the next step, rank 0 saves, and the job exits non-zero so it can be requeued.
torchrun waits TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (here 120 unless set) before killing the ranks.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

sm = snakemake  # noqa: F821 - injected by Snakemake
out_dir = Path(sm.output.best).parent
command = [
    sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={sm.params.ranks}",
    "-m", "vecset.train.run",
    "--settings", sm.params.settings,
    "--train-csv", sm.input.train,
    "--val-csv", sm.input.val,
    "--state-dir", sm.params.state_dir,
    "--out-dir", str(out_dir),
    "--run-name", sm.wildcards.run,
]  # fmt: skip
env = dict(os.environ)
# The package is importable from this folder (workflow/scripts/vecset links to src/vecset).
env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), env.get("PYTHONPATH")]))
env.setdefault("OMP_NUM_THREADS", str(max(1, sm.threads // int(sm.params.ranks))))
env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "120")
Path(sm.log[0]).parent.mkdir(parents=True, exist_ok=True)
with open(sm.log[0], "a") as log:
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: child.send_signal(signal.SIGTERM))
    code = child.wait()
sys.exit(code)
