"""The processes of a data-parallel run: joining the process group torchrun describes (Dist,
init_distributed), each rank's share of a batch (shard), and the collectives that keep every rank's
decisions identical (all_mean of the loss, any_rank of the stop flags, broadcast of rank 0's
metrics). With one process every helper is the identity and torch.distributed is never touched."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False     # did we create the process group (and so destroy it)?

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT)
    when WORLD_SIZE > 1: gloo for CPU training, nccl for CUDA. One process: nothing to do."""
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(rank, world, local, owned=True)


def shard(x, rank: int, world: int):
    """This rank's contiguous share of a global batch (the batch must divide evenly, so that DDP's
    average of per-rank mean gradients is the mean gradient of the whole batch)."""
    B = x.shape[0]
    if B % world:
        raise ValueError(f"batch {B} does not split evenly over {world} processes")
    n = B // world
    return x[rank * n:(rank + 1) * n]


def all_mean(v: float, d: Dist) -> float:
    """The mean of `v` over the ranks (the step's loss, so that every rank sees the same)."""
    if d.world == 1:
        return v
    import torch
    import torch.distributed as dist

    t = torch.tensor([v], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / d.world


def any_rank(flags: list[bool], d: Dist) -> list[bool]:
    """Each flag true on any rank (a signal or a time budget on one rank stops all of them)."""
    if d.world == 1:
        return [bool(f) for f in flags]
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(f) for f in flags], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def broadcast(vals: list[float], d: Dist) -> list[float]:
    """Rank 0's values on every rank (validation and test metrics: every rank decides the same)."""
    if d.world == 1:
        return vals
    import torch
    import torch.distributed as dist

    t = torch.tensor(vals, dtype=torch.float64)
    dist.broadcast(t, 0)
    return t.tolist()
