"""One process of ``test_train_fsdp``'s compile check, under torchrun: ``python -m tests.fsdp_compile_worker BACKEND
OUT_DIR``.

Shards two copies of the tiny U-Net (same seed, gradient checkpointing on) as the trainer does, compiles one whole
with ``torch.compile(backend=BACKEND)``, runs one forward and backward of each on this rank's input and writes
``OUT_DIR/rank<RANK>.json``: both losses and the largest gradient difference, for the test to compare (a file per
rank: two processes printing to one pipe can run their lines together).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from training.distributed import setup_distributed, shard_model
from training.model import UNetConfig, VideoUNet
from training.trainer import fsdp_units


def main(backend: str, out_dir: str) -> None:
    env = setup_distributed()
    config = UNetConfig.tiny()
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = VideoUNet(config)
        model.set_gradient_checkpointing(True)
        shard_model(model, fsdp_units(model), env, bf16=True)
        models.append(model)
    torch.manual_seed(1 + env.rank)
    inputs = (torch.randn(1, config.in_channels, 4, 16, 16), torch.tensor([500]),
              torch.randn(1, 5, config.cross_attention_dim))
    losses = []
    for model in (models[0], torch.compile(models[1], backend=backend)):
        loss = model(*inputs).pow(2).mean()
        loss.backward()
        losses.append(loss.item())
    difference = max((a.grad - b.grad).abs().max().full_tensor().item()
                     for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True))
    result = {"rank": env.rank, "losses": losses, "grad_difference": difference}
    Path(out_dir, f"rank{env.rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
