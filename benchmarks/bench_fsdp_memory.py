"""Memory per rank of the model's training state under DDP and FSDP2, at the paper's size: an ESTIMATE.

The U-Net of ``configs/train_sd21.yaml`` (Stable Diffusion 2.1's layout, the config's video layers) is built on
the meta device (no memory, no weights), and the bytes each rank holds are counted from its parameters'
shapes, as the trainer lays them out:

* DDP (the baseline): every rank holds the float32 weights, their gradients, DDP's gradient buckets (another
  copy of the gradients: the trainer keeps ``gradient_as_bucket_view`` off, torch's default), AdamW's two
  moments and the float32 EMA; under bf16 autocast the bfloat16 casts of the weights are cached for the step.
* FSDP2 over N ranks (``distributed: fsdp``): each parameter is sharded on dim 0 and padded to N equal chunks
  (``ceil(dim0 / N)`` rows per rank, as ``fully_shard`` does), and so are its gradient, AdamW state and EMA.
  On top of that, for a step: the root's parameters gathered whole in bfloat16 (``MixedPrecisionPolicy``),
  kept through forward and backward, and the two largest units (``training.trainer.fsdp_units``: the one
  running and the one prefetched) gathered whole in bfloat16, each with its unsharded gradient in bfloat16 and
  its float32 copy for the reduce-scatter.

Activations are not counted: they depend on the batch, the frame size and gradient checkpointing, and are the
same under both. Nothing runs on an accelerator; this is arithmetic on shapes, not a measurement. Each FSDP2
figure is also given as a ratio to DDP's, computed in the same process.

Run from the repository root: ``.venv/bin/python benchmarks/bench_fsdp_memory.py > report.md``
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from training.config import load_config  # noqa: E402
from training.model import VideoUNet  # noqa: E402
from training.trainer import fsdp_units  # noqa: E402

GIB = 2**30
FP32, BF16 = 4, 2


def shard_numel(shape: torch.Size, world: int) -> int:
    """Elements one rank holds of a parameter of ``shape`` under ``fully_shard`` over ``world`` ranks."""
    if not shape:
        return 1
    return math.ceil(shape[0] / world) * math.prod(shape[1:])


def estimate(model: VideoUNet, worlds: list[int]) -> tuple[dict[str, int], dict[int, dict[str, int]], dict[str, int]]:
    """(DDP's bytes per rank by part, FSDP2's per world size by part, the model's counts)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    units = fsdp_units(model)
    in_units = {id(p) for unit in units for p in unit.parameters()}
    root = sum(p.numel() for p in params if id(p) not in in_units)
    unit_sizes = sorted((sum(p.numel() for p in unit.parameters()) for unit in units), reverse=True)
    two_largest = sum(unit_sizes[:2])
    ddp = {"weights": FP32 * total, "gradients": FP32 * total, "DDP buckets": FP32 * total,
           "AdamW moments": 2 * FP32 * total, "EMA": FP32 * total, "bf16 weight casts / gathers": BF16 * total}
    fsdp = {}
    for world in worlds:
        shard = sum(shard_numel(p.shape, world) for p in params)
        fsdp[world] = {"weights": FP32 * shard, "gradients": FP32 * shard, "DDP buckets": 0,
                       "AdamW moments": 2 * FP32 * shard, "EMA": FP32 * shard,
                       "bf16 weight casts / gathers": BF16 * (root + two_largest),
                       "unsharded unit gradients": (BF16 + FP32) * two_largest}
    counts = {"parameters": total, "root": root, "units": len(units), "largest unit": unit_sizes[0]}
    return ddp, fsdp, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/train_sd21.yaml", help="training config whose U-Net to size")
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8], help="FSDP2 world sizes")
    args = parser.parse_args()
    cfg = load_config(args.config)
    with torch.device("meta"):
        model = VideoUNet(cfg.model.unet)
    ddp, fsdp, counts = estimate(model, args.ranks)
    parts = list(dict.fromkeys([*ddp, *next(iter(fsdp.values()))]))
    unet = cfg.model.unet
    print("## FSDP2 memory per rank (estimate, meta device)\n")
    print(f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}; {platform.platform()}; torch "
          f"{torch.__version__}; no accelerator used: arithmetic on the shapes of the model built on the meta device")
    print(f"- model: `{args.config}`'s U-Net ({'/'.join(map(str, unet.block_channels))} channels, "
          f"{unet.layers_per_block} layers per block, attention {unet.attention}): {counts['parameters'] / 1e9:.3f} B "
          f"parameters; {counts['units']} FSDP units (largest {counts['largest unit'] / 1e6:.1f} M), root "
          f"{counts['root'] / 1e6:.2f} M")
    print("- model state only (weights, gradients, AdamW, EMA, bf16 copies); activations excluded (the same under "
          "both)\n")
    header = ["part", "DDP GiB", *(f"FSDP2 x{n} GiB" for n in args.ranks)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for part in parts:
        row = [part, f"{ddp.get(part, 0) / GIB:.2f}", *(f"{fsdp[n].get(part, 0) / GIB:.2f}" for n in args.ranks)]
        print("| " + " | ".join(row) + " |")
    total_ddp = sum(ddp.values())
    totals = {n: sum(fsdp[n].values()) for n in args.ranks}
    print("| **total per rank** | **" + f"{total_ddp / GIB:.2f}" + "** | "
          + " | ".join(f"**{totals[n] / GIB:.2f}**" for n in args.ranks) + " |")
    print("| ratio to DDP | 1.00 | " + " | ".join(f"{totals[n] / total_ddp:.3f}" for n in args.ranks) + " |")


if __name__ == "__main__":
    main()
