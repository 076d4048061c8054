"""The torchrun command line of a training job: one node standalone, several nodes through srun + c10d."""

from __future__ import annotations

import pytest

from vecset.train.launch import Allocation, slurm_allocation, torchrun_command

ARGS = ["--plan", "results/train/r/settings.json", "--state-dir", "results/train/r/state"]


def test_single_node_is_standalone_with_one_rank_per_gpu():
    cmd = torchrun_command(4, 1, ARGS, gpus_per_node=4, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone",
                   "-m", "vecset.train.run", *ARGS]  # fmt: skip


def test_multi_node_runs_one_agent_per_node_under_srun_with_rendezvous_on_the_first_node():
    allocation = Allocation(job_id="4242", head="gpu07", cpus_per_task="32")
    cmd = torchrun_command(4, 2, ARGS, gpus_per_node=4, allocation=allocation, python="py")
    srun, torchrun = cmd[: cmd.index("py")], cmd[cmd.index("py") :]
    assert srun == ["srun", "--ntasks=2", "--kill-on-bad-exit=1", "--cpus-per-task=32", "--gres=gpu:4"]
    assert "--standalone" not in torchrun
    assert {"--nnodes=2", "--nproc_per_node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu07:29400",
            "--rdzv-id=vecset-4242"} <= set(torchrun)  # fmt: skip
    assert torchrun[-len(ARGS) - 2 :] == ["-m", "vecset.train.run", *ARGS]


def test_multi_node_outside_slurm_names_the_fix():
    with pytest.raises(RuntimeError, match=r"SLURM_JOB_ID is not set.*nodes: 1"):
        slurm_allocation({})
    with pytest.raises(ValueError, match="needs the SLURM allocation"):
        torchrun_command(1, 2, ARGS)
    with pytest.raises(ValueError, match="at least one rank"):
        torchrun_command(0, 1, ARGS)
