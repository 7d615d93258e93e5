"""``VideoUNet``: the latent video diffusion 3D U-Net (ModelScope text-to-video layout + VideoFactory's swap
attention), built entirely from a ``UNetConfig``.

Layout (as Stable Diffusion's U-Net, applied per frame, with temporal layers added):

* ``conv_in`` per frame; sinusoidal timestep embedding -> MLP;
* down blocks: per level ``layers_per_block`` x [ResBlock (2D + temporal conv), transformer block if the
  level has attention], then a spatial-only stride-2 downsample (not after the last level);
* middle: ResBlock, transformer block, ResBlock;
* up blocks: per level (deepest first) ``layers_per_block + 1`` x [concat skip, ResBlock, transformer
  block], then a spatial-only 2x upsample (not after the top level);
* GroupNorm, SiLU, ``conv_out`` per frame.

Each transformer block is a ``SpatioTemporalBlock``; its fusion layer depends on ``config.attention``.
With ``config.fps_conditioning`` an embedding of the clip's frame rate is added to the timestep embedding.
A single frame (T = 1) bypasses every temporal layer, so images train the image model (joint training).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.model.attention import STREAMS, sinusoidal_embedding
from training.model.blocks import (
    Downsample,
    FpsEmbedding,
    ResBlock,
    SpatioTemporalBlock,
    Upsample,
    make_fusion,
    per_frame,
)
from training.model.config import UNetConfig


@contextlib.contextmanager
def _own_rng(base: str, name: str) -> Iterator[None]:
    """Build what is inside from an RNG stream of its own, seeded from ``base`` and ``name``, and leave the
    global CPU RNG as it was. The attention variants' own layers (the fusion) are built this way, so the layers
    every variant shares draw the same numbers whatever the variant: with one seed, all arms of the ablation
    start from the same shared weights (and the global RNG ends in the same state)."""
    seed = int.from_bytes(hashlib.sha256(f"{base}/{name}".encode()).digest()[:8], "little") >> 1
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


class _QueryRoles:
    """Hands out the query stream of each window cross-attention in forward order, so the role is fixed at
    construction: alternating per layer or per U-Net block for ``swap``, constant for the one-way variants."""

    def __init__(self, config: UNetConfig):
        self.config = config
        self.layer = 0
        self.block = -1

    def start_block(self) -> None:
        """Call when a U-Net block that has transformer blocks begins."""
        self.block += 1

    def next(self) -> str:
        fixed = {"spatial_query": "spatial", "temporal_query": "temporal"}.get(self.config.attention)
        index = self.layer if self.config.swap_every == "layer" else self.block
        self.layer += 1
        return fixed or STREAMS[index % 2]


class UNetBlock(nn.Module):
    """One down, middle or up block: ResBlocks, each followed by a transformer block where the level has
    attention, and an optional resampler at the end."""

    def __init__(self, resnets: list[ResBlock], transformers: list[SpatioTemporalBlock] | None,
                 resample: nn.Module | None):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.transformers = nn.ModuleList(transformers) if transformers else None
        self.resample = resample


class VideoUNet(nn.Module):
    """Denoiser ``(latents, timesteps, text) -> prediction``; see the module docstring for the layout."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = config.gradient_checkpointing
        chans = config.block_channels
        temb = 4 * chans[0]
        self.time_embed = nn.Sequential(nn.Linear(chans[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(config.in_channels, chans[0], 3, padding=1)
        roles = _QueryRoles(config)
        levels = config.levels_with_attention
        # the variant-specific layers' streams follow the seed (the RNG state now) without drawing from it
        rng_base = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
        fusion_index = itertools.count()
        self.fps_embed = None
        if config.fps_conditioning:  # optional layer: its own RNG stream, so the shared weights stay the same
            with _own_rng(rng_base, "fps_embed"):
                self.fps_embed = FpsEmbedding(chans[0], temb)

        def fusion(channels: int) -> nn.Module | None:
            with _own_rng(rng_base, f"fusion.{next(fusion_index)}"):
                return make_fusion(config.attention, channels, config.attention_head_dim, config.window,
                                   roles.next())

        def resnet(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, temb, config.norm_num_groups, config.temporal_conv_layers, config.dropout)

        def transformers(channels: int, count: int, has_attention: bool) -> list[SpatioTemporalBlock] | None:
            if not has_attention:
                return None
            roles.start_block()
            return [SpatioTemporalBlock(channels, config.attention_head_dim, config.cross_attention_dim,
                                        config.norm_num_groups, fusion(channels),
                                        parallel=config.streams == "parallel")
                    for _ in range(count)]

        skips = [chans[0]]
        self.down = nn.ModuleList()
        ch = chans[0]
        for level, out_ch in enumerate(chans):
            last = level == len(chans) - 1
            resnets = []
            for _ in range(config.layers_per_block):
                resnets.append(resnet(ch, out_ch))
                ch = out_ch
                skips.append(ch)
            self.down.append(UNetBlock(resnets, transformers(ch, config.layers_per_block, levels[level]),
                                       None if last else Downsample(ch)))
            if not last:
                skips.append(ch)

        self.mid = UNetBlock([resnet(ch, ch), resnet(ch, ch)], transformers(ch, 1, True), None)

        self.up = nn.ModuleList()
        for level in reversed(range(len(chans))):
            out_ch = chans[level]
            resnets = []
            for _ in range(config.layers_per_block + 1):
                resnets.append(resnet(ch + skips.pop(), out_ch))
                ch = out_ch
            self.up.append(UNetBlock(resnets, transformers(ch, config.layers_per_block + 1, levels[level]),
                                     Upsample(ch) if level > 0 else None))

        self.norm_out = nn.GroupNorm(config.norm_num_groups, chans[0], eps=1e-5)
        self.conv_out = nn.Conv2d(chans[0], config.out_channels, 3, padding=1)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute every ResBlock and transformer block in backward (saves most activation memory for
        about one extra forward pass). Kept in ``config`` so a saved config restores it."""
        self.gradient_checkpointing = enabled
        self.config.gradient_checkpointing = enabled

    def _run(self, module: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                fps: torch.Tensor | float | None = None) -> torch.Tensor:
        """``latents`` (B, C, T, H, W); ``timesteps`` (B,) or scalar, int or float; ``text`` (B, L, D); ``fps``
        (B,) or scalar, the clips' frame rate (needed with ``fps_conditioning``, ignored without it and when
        T = 1) -> (B, out_channels, T, H, W).

        A single frame (T = 1) bypasses every temporal layer (temporal convolutions and transformers, fusion,
        fps embedding): the model is then exactly the image model, for joint image-video training."""
        timesteps = self._check_inputs(latents, timesteps, text)
        temb = self.time_embed(sinusoidal_embedding(timesteps, self.config.block_channels[0]).to(latents.dtype))
        if self.fps_embed is not None and latents.shape[2] > 1:
            if fps is None:
                raise ValueError("this model has model.unet.fps_conditioning: pass fps (the clips' frame rate)")
            fps = torch.as_tensor(fps, device=latents.device, dtype=torch.float32)
            fps = fps.expand(latents.shape[0]) if fps.ndim == 0 else fps
            if fps.shape != (latents.shape[0],):
                raise ValueError(f"fps must be a scalar or (B={latents.shape[0]},), got {tuple(fps.shape)}")
            temb = temb + self.fps_embed(fps).to(temb.dtype)

        x = per_frame(self.conv_in, latents)
        skips = [x]
        for block in self.down:
            for i, resnet in enumerate(block.resnets):
                x = self._block_layer(block, i, resnet, x, temb, text)
                skips.append(x)
            if block.resample is not None:
                x = block.resample(x)
                skips.append(x)

        for i, resnet in enumerate(self.mid.resnets):
            x = self._run(resnet, x, temb)
            if i == 0:
                x = self._run(self.mid.transformers[0], x, text)

        for block in self.up:
            for i, resnet in enumerate(block.resnets):
                x = self._block_layer(block, i, resnet, torch.cat([x, skips.pop()], dim=1), temb, text)
            if block.resample is not None:
                x = block.resample(x)

        return per_frame(lambda f: self.conv_out(F.silu(self.norm_out(f))), x)

    def _block_layer(self, block: UNetBlock, i: int, resnet: ResBlock, x: torch.Tensor, temb: torch.Tensor,
                     text: torch.Tensor) -> torch.Tensor:
        """The ``i``-th ResBlock of ``block`` and, where the level has attention, its transformer block."""
        x = self._run(resnet, x, temb)
        if block.transformers is not None:
            x = self._run(block.transformers[i], x, text)
        return x

    def _check_inputs(self, latents: torch.Tensor, timesteps: torch.Tensor | float, text: torch.Tensor
                      ) -> torch.Tensor:
        """Clear errors for wrongly shaped inputs; returns ``timesteps`` as a (B,) tensor."""
        cfg = self.config
        if latents.ndim != 5 or latents.shape[1] != cfg.in_channels:
            raise ValueError(f"latents must be (B, {cfg.in_channels}, T, H, W), got {tuple(latents.shape)}")
        b, _, _, h, w = latents.shape
        factor = cfg.downsample_factor
        if h % factor or w % factor:
            raise ValueError(f"latent H and W must be divisible by {factor} (the U-Net halves them "
                             f"{len(cfg.block_channels) - 1} times), got {h}x{w}; change the frame size")
        if text.ndim != 3 or text.shape[0] != b or text.shape[2] != cfg.cross_attention_dim:
            raise ValueError(f"text must be (B={b}, L, {cfg.cross_attention_dim}), got {tuple(text.shape)}; "
                             f"cross_attention_dim must match the text encoder's hidden size")
        timesteps = torch.as_tensor(timesteps, device=latents.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must be a scalar or (B={b},), got {tuple(timesteps.shape)}")
        return timesteps
