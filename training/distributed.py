"""Where this process stands in a distributed run (torchrun's environment, Ray Train's, or alone), and FSDP2's
sharding of the model and the gathering of its full state."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor


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


# --- FSDP2 (train.distributed: fsdp) --------------------------------------------------------------------------
# Every rank holds 1/world of each parameter (a DTensor sharded on dim 0), of its gradient and of its AdamW
# state; a unit's full parameters exist only while it runs (all-gathered before, freed after). What leaves the
# process (checkpoints, evaluation) is always the full, plain state, so files stay those of a DDP run.


def shard_model(model: nn.Module, units: Iterable[nn.Module], env: DistEnv, bf16: bool) -> None:
    """``fully_shard`` each of ``units`` (the blocks the forward calls one after another), then ``model`` (the
    layers left: its root), in place, over all ranks.

    A unit's parameters are gathered when its forward starts and freed when it ends (and again for its
    backward), so the full weights of at most a unit or two (the next one is prefetched) exist at a time.
    ``bf16`` on CUDA: the gathered parameters are cast to bfloat16 for compute (``MixedPrecisionPolicy``),
    the gradients reduced in float32 and the sharded master weights stay float32.
    """
    mesh = init_device_mesh(env.device.type, (env.world,))
    on_gpu = env.device.type == "cuda" and bf16
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if on_gpu
              else MixedPrecisionPolicy())
    # FSDP2 warns once per block class returning a view (per_frame's transpose), since an in-place op on it
    # would skip the block's backward gather; the U-Net and the loss only use such outputs out of place
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDP\w+\) returned a view tensor")
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU of rank 0 (other ranks get ``{}``); every rank must call it."""
    return get_model_state_dict(model, options=_FULL)


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole (unsharded) state dict, which every rank holds, into a sharded ``model``: each rank keeps
    its own shard."""
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state on the CPU of rank 0 (other ranks get ``{}``), in the format of a plain
    ``optimizer.state_dict()`` (parameters numbered in ``model.parameters()`` order), so a DDP or
    single-process run resumes from it too; every rank must call it."""
    full = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if not full:
        return {}
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    return {"state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                             for group in full["param_groups"]]}


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a plain ``optimizer.state_dict()`` (``full_optimizer_state``'s format, or a DDP run's), which every
    rank holds, into the optimizer of a sharded ``model``: each rank keeps its shard of each state."""
    names = [name for name, _ in model.named_parameters()]
    by_name = {"state": {names[i]: value for i, value in state["state"].items()},
               "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                                for group in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def full_tensors(state: dict[str, torch.Tensor], env: DistEnv) -> dict[str, torch.Tensor]:
    """``state``'s DTensors gathered whole, on the CPU of rank 0 (other ranks get ``{}``); plain tensors as
    they are. One tensor at a time, so only one is ever whole on the device. Every rank must call it."""
    full = {}
    for key, value in state.items():
        value = value.full_tensor() if isinstance(value, DTensor) else value
        if env.main:
            full[key] = value.cpu()
    return full


def shard_like(state: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole tensors (every rank holds them all) cut into this rank's shards of the DTensors of ``like`` (a
    sharded model's state dict), without communication; keys whose ``like`` is a plain tensor stay whole."""
    out = {}
    for key, value in state.items():
        target = like[key]
        value = value.to(device=target.device, dtype=target.dtype)
        out[key] = (distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)
                    if isinstance(target, DTensor) else value)
    return out
