"""What each attention variant of the video U-Net costs: forward + backward time, peak memory and FLOPs.

For every variant of ``UNetConfig.attention`` (swap, spatial_query, temporal_query, factorized, full3d),
in one process and on the same inputs:

* one U-Net level: one transformer block (spatial transformer, temporal transformer, and the variant's
  fusion layer) at the top level's size, where attention is most expensive;
* the whole model (every level, ResNet blocks included).

Each figure is also given as a ratio to ``factorized`` (2D + 1D attention only, ModelScope's model, the
baseline the paper adds its swap attention to), measured in the same run.

* Time: wall time of a step (zero grads, forward, mean-square loss, backward) after ``--warmup`` steps; on
  a GPU the median of ``--repeats`` steps under bf16 autocast (fp32 weights, as the trainer runs); on the
  CPU, in fp32, the best of ``--repeats`` interleaved rounds (see ``Bench.measure``).
* Peak memory: the most memory held during a step beyond what was held before it (parameters, inputs).
  GPU: the CUDA allocator's peak. CPU: the peak of live tensor bytes tracked by PyTorch's ``MemTracker``
  (``torch.distributed._tools``) in a separate untimed step, since the CPU allocator keeps no statistics.
* FLOPs: counted by ``torch.utils.flop_counter.FlopCounterMode`` for one step (matmuls, convolutions and
  attention kernels; elementwise work is not counted). On a GPU the achieved TFLOP/s is compared with the
  card's dense bf16 peak.

Sizes: ``paper`` is VideoFactory's (16 frames, a 24x48 latent, channels 320/640/1280/1280, 2 layers per
block, head dim 64, a 77-token text of width 1024), the default on a GPU; ``reduced`` keeps the shape of the
problem at a size a 2-core CPU does in a few minutes, the default on the CPU.

Run from the repository root: ``.venv/bin/python benchmarks/bench_attention.py > report.md``
(the markdown report goes to stdout, progress to stderr).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from training.model import ATTENTION_VARIANTS, UNetConfig, VideoUNet
from training.model.blocks import SpatioTemporalBlock, make_fusion

BASELINE = "factorized"
VARIANTS = (BASELINE, *(v for v in ATTENTION_VARIANTS if v != BASELINE))

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


@dataclass(frozen=True)
class Size:
    """The problem: a batch of latent videos and the U-Net that denoises them."""

    frames: int
    height: int
    width: int
    block_channels: tuple[int, ...]
    layers_per_block: int
    head_dim: int
    text_tokens: int
    text_dim: int
    window: tuple[int, int, int] = (2, 4, 4)
    batch: int = 1

    def config(self, attention: str) -> UNetConfig:
        return UNetConfig(block_channels=self.block_channels, layers_per_block=self.layers_per_block,
                          attention_head_dim=self.head_dim, cross_attention_dim=self.text_dim,
                          attention=attention, window=self.window)

    def describe(self) -> str:
        return (f"batch {self.batch}, {self.frames} frames, latent {self.height}x{self.width}, channels "
                f"{'/'.join(map(str, self.block_channels))}, {self.layers_per_block} layers per block, head dim "
                f"{self.head_dim}, text {self.text_tokens}x{self.text_dim}, window {self.window}")


SIZES = {
    "paper": Size(16, 24, 48, (320, 640, 1280, 1280), 2, 64, 77, 1024),
    "reduced": Size(16, 12, 24, (64, 128, 256), 1, 64, 77, 256),
}


@dataclass
class Measurement:
    seconds: float
    peak_bytes: int
    flops: int
    params: int


Case = Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]
"""Builds a module and its inputs on the device."""


class Bench:
    """Runs forward + backward steps of a module on one device and measures them."""

    def __init__(self, device: torch.device, repeats: int, warmup: int):
        self.device = device
        self.repeats = repeats
        self.warmup = warmup
        self.cuda = device.type == "cuda"

    def step(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        module.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            out = module(*args)
        out.float().square().mean().backward()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time_step(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> float:
        self.sync()
        start = time.perf_counter()
        self.step(module, args)
        self.sync()
        return time.perf_counter() - start

    def measure(self, cases: dict[str, Case]) -> dict[str, Measurement]:
        """Time every case, then count its FLOPs and peak memory in separate, untimed steps.

        On the CPU the cases are timed in interleaved rounds (one step of each, ``repeats`` times) and the
        best step counts: the machine may be shared, and interleaving spreads the other work's load over all
        variants alike while the least disturbed step is the closest to the cost itself. On a GPU (not
        shared, and too small to hold every paper-size model at once) each case runs alone: the median."""
        if self.cuda:
            results = {}
            for name, make in cases.items():
                progress(f"{name} ...")
                case = make()
                self.warm_up(*case)
                results[name] = self.counts(*case, statistics.median(self.time_step(*case)
                                                                     for _ in range(self.repeats)))
                del case
                torch.cuda.empty_cache()
            return results
        built = {name: make() for name, make in cases.items()}
        for case in built.values():
            self.warm_up(*case)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(self.repeats):
            progress(f"round {round_ + 1}/{self.repeats}")
            for name, case in built.items():
                times[name].append(self.time_step(*case))
        return {name: self.counts(*case, min(times[name])) for name, case in built.items()}

    def warm_up(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        for _ in range(self.warmup):
            self.step(module, args)

    def counts(self, module: nn.Module, args: tuple[torch.Tensor, ...], seconds: float) -> Measurement:
        flops = FlopCounterMode(display=False)
        with flops:
            self.step(module, args)
        m = Measurement(seconds, self.peak_bytes(module, args), flops.get_total_flops(),
                        sum(p.numel() for p in module.parameters()))
        progress(f"{type(module).__name__}: {m.seconds * 1e3:.1f} ms, {m.peak_bytes / 2**20:.0f} MiB, "
                 f"{m.flops / 1e9:.1f} GFLOP")
        return m

    def peak_bytes(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> int:
        module.zero_grad(set_to_none=True)
        if self.cuda:
            self.sync()
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step(module, args)
            self.sync()
            return torch.cuda.max_memory_allocated(self.device) - before
        from torch.distributed._tools.mem_tracker import MemTracker  # heavy import, CPU path only

        tracker = MemTracker()
        tracker.track_external(module, *args)
        with tracker:
            self.step(module, args)
        peak = tracker.get_tracker_snapshot("peak")[self.device]
        resident = sum(v for k, v in peak.items() if k in ("Parameter", "Buffer"))
        return peak["Total"] - resident - sum(a.numel() * a.element_size() for a in args)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def level_case(size: Size, attention: str, device: torch.device) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """One transformer block at the top level's size (seeded: every variant gets the same inputs)."""
    torch.manual_seed(0)
    cfg = size.config(attention)
    channels = cfg.block_channels[0]
    query = "temporal" if attention == "temporal_query" else "spatial"  # swap's first layer queries spatially
    block = SpatioTemporalBlock(channels, cfg.attention_head_dim, cfg.cross_attention_dim, cfg.norm_num_groups,
                                make_fusion(attention, channels, cfg.attention_head_dim, cfg.window, query))
    x = torch.randn(size.batch, channels, size.frames, size.height, size.width, device=device)
    text = torch.randn(size.batch, size.text_tokens, size.text_dim, device=device)
    return block.to(device), (x, text)


def model_case(size: Size, attention: str, device: torch.device) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The whole U-Net (seeded: every variant gets the same inputs)."""
    torch.manual_seed(0)
    cfg = size.config(attention)
    latents = torch.randn(size.batch, cfg.in_channels, size.frames, size.height, size.width, device=device)
    steps = torch.randint(0, 1000, (size.batch,), device=device)
    text = torch.randn(size.batch, size.text_tokens, size.text_dim, device=device)
    return VideoUNet(cfg).to(device), (latents, steps, text)


def bf16_peak(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def report(results: dict[str, dict[str, Measurement]], device: torch.device) -> list[str]:
    peak = bf16_peak(device) if device.type == "cuda" else None
    rate_head = "TFLOP/s | % bf16 peak" if device.type == "cuda" else "GFLOP/s"
    lines = [f"| scope | variant | params | fwd+bwd ms | × {BASELINE} | peak MiB | × {BASELINE} | GFLOP/step "
             f"| × {BASELINE} | {rate_head} |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if device.type == "cuda" else "")]
    for scope, by_variant in results.items():
        base = by_variant[BASELINE]
        for variant, m in by_variant.items():
            rate = m.flops / m.seconds
            if device.type == "cuda":
                rate_cells = f"{rate / 1e12:.1f} | " + (f"{100 * rate / 1e12 / peak:.1f} %" if peak else "n/a")
            else:
                rate_cells = f"{rate / 1e9:.1f}"
            lines.append(f"| {scope} | {variant} | {m.params / 1e6:.2f} M | {m.seconds * 1e3:.1f} "
                         f"| {m.seconds / base.seconds:.2f} | {m.peak_bytes / 2**20:.0f} "
                         f"| {m.peak_bytes / base.peak_bytes:.2f} | {m.flops / 1e9:.1f} "
                         f"| {m.flops / base.flops:.2f} | {rate_cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to run; auto (the default) picks the GPU when there is one")
    parser.add_argument("--size", choices=["auto", *SIZES], default="auto",
                        help="problem size; auto (the default) is 'paper' on a GPU and 'reduced' on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case (default 5)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 GPU, 1 CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); on a machine shared with other work "
                             "1 avoids spinning OpenMP threads, which distort the ratios")
    parser.add_argument("--scopes", nargs="+", choices=["level", "model"], default=["level", "model"],
                        help="what to measure: one transformer block at the top level, the whole U-Net (default: both)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; use --device cpu")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES[args.size if args.size != "auto" else ("paper" if gpu else "reduced")]
    warmup = args.warmup if args.warmup is not None else (2 if gpu else 1)
    bench = Bench(device, args.repeats, warmup)
    scopes = {"level": level_case, "model": model_case}
    load_before = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, dict[str, Measurement]] = {}
    for scope in args.scopes:
        progress(f"{scope}: {', '.join(VARIANTS)}")
        results[scope] = bench.measure({variant: partial(scopes[scope], size, variant, device)
                                        for variant in VARIANTS})

    print("## Attention variants\n")
    print(f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"- machine: {machine(device)}; {platform.platform()}; Python {platform.python_version()}, torch "
          f"{torch.__version__}")
    print(f"- precision: {'bf16 autocast, fp32 weights' if gpu else 'fp32'}; size: {size.describe()}")
    print(f"- level = one transformer block at the top level ({size.block_channels[0]} channels); model = the whole "
          f"U-Net; time: {'median' if gpu else 'best'} of {bench.repeats} steps"
          f"{'' if gpu else ' (interleaved rounds)'} after {bench.warmup} warm-up")
    print(f"- load average (1, 5, 15 min) before: {' '.join(f'{v:.2f}' for v in load_before)}; after: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; run took {time.perf_counter() - started:.0f} s\n")
    print("\n".join(report(results, device)))


if __name__ == "__main__":
    main()
