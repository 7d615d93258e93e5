"""Building blocks of the ModelScope-style 3D U-Net, all on video tensors (B, C, T, H, W).

Image layers (2D convolutions, GroupNorm) run on every frame independently, so a pretrained image U-Net's
weights keep their meaning; the temporal layers added next to them start as no-ops (zero-initialised last
layer) so that the video model initially behaves like the image model applied frame by frame.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from training.model.attention import (
    GlobalSpatiotemporalAttention,
    SpatialTransformer,
    SwapWindowCrossAttention,
    TemporalSelfAttention,
    TemporalTransformer,
    sinusoidal_embedding,
)


def per_frame(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D ``layer`` to each frame of ``x`` (B, C, T, H, W) by folding frames into the batch."""
    b, _, t, _, _ = x.shape
    y = layer(x.transpose(1, 2).flatten(0, 1))
    return y.view(b, t, *y.shape[1:]).transpose(1, 2)


class TemporalConv(nn.Module):
    """ModelScope's temporal convolution block: ``layers`` x (GroupNorm, SiLU, [dropout], Conv over time with
    kernel 3), residual. The last convolution is zero-initialised, so the block is the identity at init."""

    def __init__(self, channels: int, groups: int, layers: int, dropout: float):
        super().__init__()
        stages: list[nn.Module] = []
        for i in range(layers):
            stages += [nn.GroupNorm(groups, channels), nn.SiLU()]
            if i > 0 and dropout:
                stages.append(nn.Dropout(dropout))
            stages.append(nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0)))
        self.net = nn.Sequential(*stages)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the last convolution: the block is then the identity (see ``training.model.pretrained``)."""
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 1:  # a single frame (an image): temporal layers are bypassed (ModelScope, VideoLDM)
            return x
        return x + self.net(x)


class ResBlock(nn.Module):
    """Per-frame 2D ResNet block conditioned on the timestep embedding, followed by a temporal convolution
    (ModelScope's ``ResBlock`` + ``TemporalConvBlock``)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int,
                 temporal_layers: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.temporal = TemporalConv(out_channels, groups, temporal_layers, dropout)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, T, H, W), ``temb`` (B, temb_channels) -> (B, out_channels, T, H, W)."""
        h = per_frame(lambda f: self.conv1(F.silu(self.norm1(f))), x)
        h = h + self.time_proj(F.silu(temb))[:, :, None, None, None]
        h = per_frame(lambda f: self.conv2(self.dropout(F.silu(self.norm2(f)))), h)
        return self.temporal(per_frame(self.skip, x) + h)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution per frame; time is never downsampled."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(self.conv, x)


class Upsample(nn.Module):
    """Double H and W (nearest neighbour, then a 3x3 convolution) per frame."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(lambda f: self.conv(F.interpolate(f, scale_factor=2.0, mode="nearest")), x)


class SpatioTemporalBlock(nn.Module):
    """One transformer block of a U-Net level: spatial transformer -> temporal transformer -> fusion.

    The spatial stream is the spatial transformer's output. The temporal stream depends on ``parallel``
    (``UNetConfig.streams``): serial (ModelScope's 2D then 1D order), the temporal transformer runs on the
    spatial stream and its output is the temporal stream and the block's factorized output; parallel, it runs
    on the block's input, the temporal stream is that input plus its update, and the factorized output is the
    input plus both updates. ``fusion`` is the only part the attention variants change: ``None`` (factorized), a
    ``SwapWindowCrossAttention`` (swap and the one-way variants), a ``GlobalSpatiotemporalAttention`` (full3d)
    or a ``TemporalSelfAttention`` (factorized_matched); its output is added to the factorized output. A single
    frame (T = 1, an image) skips the temporal transformer and the fusion: the block is then exactly the image
    model's transformer block.
    """

    def __init__(self, channels: int, head_dim: int, context_dim: int, groups: int, fusion: nn.Module | None,
                 parallel: bool = False):
        super().__init__()
        self.spatial = SpatialTransformer(channels, head_dim, context_dim, groups)
        self.temporal = TemporalTransformer(channels, head_dim, groups)
        self.fusion = fusion
        self.parallel = parallel

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial(x, text)
        if x.shape[2] == 1:  # a single frame (an image): only the image layers run, so T = 1 is the image model
            return spatial
        if self.parallel:
            temporal_update = self.temporal.update(x)
            temporal, out = x + temporal_update, spatial + temporal_update
        else:
            temporal = out = self.temporal(spatial)
        if self.fusion is None:
            return out
        return out + self.fusion(spatial, temporal)


def make_fusion(attention: str, channels: int, head_dim: int, window: tuple[int, int, int],
                query_stream: str) -> nn.Module | None:
    """The fusion layer of one transformer block for an attention variant (see ``UNetConfig.attention``)."""
    if attention == "factorized":
        return None
    if attention == "full3d":
        return GlobalSpatiotemporalAttention(channels, head_dim)
    if attention == "factorized_matched":
        return TemporalSelfAttention(channels, head_dim)
    return SwapWindowCrossAttention(channels, head_dim, window, query_stream)


class FpsEmbedding(nn.Module):
    """Frame-rate conditioning (Open-Sora, VideoLDM): sinusoids of the clip's frames per second through an MLP,
    added to the timestep embedding. The last layer starts at zero, so a pretrained model is unchanged at init;
    it is a video-only layer (``training.model.pretrained`` resets it, T = 1 inputs bypass it)."""

    def __init__(self, channels: int, temb_channels: int):
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(channels, temb_channels), nn.SiLU(), nn.Linear(temb_channels, temb_channels))
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the last layer: the embedding is then 0, so the time embedding it is added to is unchanged."""
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, fps: torch.Tensor) -> torch.Tensor:
        """``fps`` (B,) float -> (B, temb_channels)."""
        return self.mlp(sinusoidal_embedding(fps, self.channels))
