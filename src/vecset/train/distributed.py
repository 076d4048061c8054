"""The ranks of a run as torchrun starts them: device, process group, reductions and barriers.

One process per rank; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE. GPU ranks use nccl
and their LOCAL_RANK's device; CPU ranks use gloo. With one process nothing is initialised and every
collective is a no-op, so the same code runs a plain ``python -m vecset.train.run``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from vecset.device import pick_device
from vecset.settings import Device


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run."""

    rank: int
    world: int
    nodes: int
    device: torch.device
    hosts: tuple[str, ...] = field(default=())  # every rank's host name, by rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def host(self) -> str:
        return self.hosts[self.rank] if self.hosts else socket.gethostname()

    def describe(self) -> str:
        where = f" ({ranks_by_host(self.hosts)})" if self.hosts else ""
        return (
            f"world size {self.world}: {self.nodes} node(s) × {self.world // self.nodes} rank(s) on {self.device.type}"
            f"{where}"
        )


def ranks_by_host(hosts: Sequence[str], only: Collection[int] | None = None) -> str:
    """Which ranks run where, from every rank's host: ``vn1: ranks 0-3; vn2: ranks 4-7`` (of the ranks in ``only``,
    when given)."""
    runs: list[tuple[str, int, int]] = []  # (host, first rank, last rank) of consecutive ranks on one host
    for rank, host in enumerate(hosts):
        if only is not None and rank not in only:
            continue
        if runs and runs[-1][0] == host and runs[-1][2] == rank - 1:
            runs[-1] = (host, runs[-1][1], rank)
        else:
            runs.append((host, rank, rank))
    return "; ".join(f"{h}: rank {a}" if a == b else f"{h}: ranks {a}-{b}" for h, a, b in runs)


# How long a collective waits for the slowest rank before failing the run. Rank 0 saves last.pt (7 GB at the
# upstream size) and best.pt while the others wait in the next step's all-reduce or at a barrier; NCCL's
# 10-minute default would kill a run over a slow file system.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=45)


@contextlib.contextmanager
def ranks(device: Device) -> Iterator[Ranks]:
    """Join the run's process group (when there are several ranks) for the duration of the block; a group the
    caller joined before stays the caller's to leave."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    placed = pick_device(device)
    created = world > 1 and not joined()
    if created:
        if placed.type == "cuda":
            torch.cuda.set_device(placed)
        dist.init_process_group(backend="nccl" if placed.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    nodes = world // int(os.environ.get("LOCAL_WORLD_SIZE", world))
    try:
        yield Ranks(int(os.environ.get("RANK", "0")), world, nodes, placed, every_host())
    finally:
        if created and joined():
            dist.destroy_process_group()


def every_host() -> tuple[str, ...]:
    """Every rank's host name, by rank (this process's alone without a process group)."""
    return tuple(gather(socket.gethostname()))


def gather(value: object) -> list:
    """Every rank's ``value`` (picklable), by rank; a collective, so it also waits for every rank."""
    if not joined():
        return [value]
    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def joined() -> bool:
    """Whether this process is in a process group (several ranks, or one a caller initialised itself)."""
    return dist.is_available() and dist.is_initialized()


def all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType | None = None) -> torch.Tensor:
    """Sum (or ``op``) over ranks, in place; the tensor itself with one rank."""
    if joined():
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if joined():
        dist.barrier()


def weight_spread(model: torch.nn.Module) -> float:
    """Largest difference between ranks of a checksum of all weights: 0 when DDP keeps ranks in step."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    high, low = checksum.clone(), -checksum.clone()
    all_reduce(high, dist.ReduceOp.MAX)
    all_reduce(low, dist.ReduceOp.MAX)
    return float(high + low)
