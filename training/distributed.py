"""Where this process stands in a distributed run: torchrun's environment, Ray Train's, or alone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # this process created the process group (torchrun), so it should destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistEnv:
    """Join the process group if there is one to join (NCCL on GPUs, gloo on CPU).

    Ray Train's ``TorchTrainer`` has already initialised the group when this runs; under ``torchrun``
    the ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` variables say how to; without either, a single process.
    """
    cuda = torch.cuda.is_available()
    owns_group = not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if owns_group:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    else:
        rank, world, local_rank = 0, 1, 0
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistEnv(rank, world, local_rank, device, owns_group)


def gather(value: Any, env: DistEnv) -> list[Any]:
    """``value`` of every rank, in rank order (on every rank)."""
    if env.world == 1:
        return [value]
    values: list[Any] = [None] * env.world
    dist.all_gather_object(values, value)
    return values


def mean_over_ranks(value: float, env: DistEnv) -> float:
    if env.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return tensor.item() / env.world
