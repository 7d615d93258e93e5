"""The U-Net's configuration: one ``settings.Config`` model that fully describes a ``VideoUNet``.

Diffusers-style: plain JSON-serialisable fields, ``to_dict``/``from_dict``, validated on construction so
that a typo in a config file fails with a message that says what is allowed instead of a shape error deep
inside the model. It is ``model.unet`` of the training config, so a bad U-Net fails when the training
config is read. Importing it loads no torch.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from settings import Config

AttentionVariant = Literal["swap", "spatial_query", "temporal_query", "factorized", "full3d", "factorized_matched"]
ATTENTION_VARIANTS: tuple[str, ...] = typing.get_args(AttentionVariant)
"""The attention variants of the paper's ablation, selected by ``UNetConfig.attention``:

* ``swap``: swapped spatiotemporal cross-attention in 3D windows; the query role alternates (the paper);
* ``spatial_query``: the same window cross-attention, spatial features always query;
* ``temporal_query``: the same, temporal features always query;
* ``factorized``: 2D spatial + 1D temporal attention only (ModelScope), no attention between the streams;
* ``full3d``: global self-attention over all T*H*W tokens in place of the window cross-attention;
* ``factorized_matched``: the parameter-matched control of ``factorized``: a second temporal self-attention
  (over the frames at each position, temporal stream only) with exactly the window cross-attention's
  parameters in its place, so it has the windowed arms' parameter count without any cross-stream attention.

With a single frame (T = 1: images in joint image-video training) every variant skips its temporal and fusion
layers and is exactly the image model.
"""

Streams = Literal["serial", "parallel"]
STREAM_LAYOUTS: tuple[str, ...] = typing.get_args(Streams)
"""Where a transformer block's temporal stream comes from (see ``SpatioTemporalBlock``):

* ``serial``: the temporal transformer runs on the spatial transformer's output (ModelScope's 2D then 1D order);
  the temporal stream is the spatial stream plus a zero-initialised temporal update, so at initialisation the
  two streams are equal and ``spatial_query`` and ``temporal_query`` are the same function, with the same
  gradients, until the temporal transformer has learned something;
* ``parallel``: the temporal transformer runs on the block's input, beside the spatial transformer, and the
  block adds both updates; the streams differ from step 0 (spatial: after the image transformer; temporal: the
  block's input plus its temporal update), so the query role matters from the first step. At initialisation
  both layouts are the image model on every frame.
"""

SwapEvery = Literal["layer", "block"]
SWAP_EVERY: tuple[str, ...] = typing.get_args(SwapEvery)
"""How often the query role alternates in ``swap``: at every swap attention layer, or once per U-Net block
(all swap layers of one down/mid/up block share a role, the next block that has attention swaps it)."""


class UNetConfig(Config):
    """Hyper-parameters of the swap-attention latent video diffusion 3D U-Net (see ``training.model.unet``)."""

    # The docstrings under the fields are their descriptions (in the JSON schema, and for readers).
    model_config = ConfigDict(use_attribute_docstrings=True)

    in_channels: int = 4
    """Channels of the latent the model denoises (the VAE's latent channels)."""
    out_channels: int = 4
    """Channels of the prediction (noise or v), normally equal to ``in_channels``."""
    block_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    """Channels at each resolution level, top (full latent size) first; each next level halves H and W."""
    layers_per_block: int = 2
    """ResNet (+ transformer) layers in each down block; up blocks have one more, as in Stable Diffusion."""
    attention_levels: tuple[bool, ...] | None = None
    """Which levels carry transformer blocks; ``None`` means every level but the deepest (Stable Diffusion's
    and ModelScope's layout). The middle block always has one."""
    attention_head_dim: int = 64
    """Channels per attention head; a level with C channels has C // attention_head_dim heads."""
    cross_attention_dim: int = 1024
    """Hidden size of the text encoder whose last hidden states the spatial transformers attend to."""
    attention: AttentionVariant = "swap"
    """Attention variant, one of ``ATTENTION_VARIANTS``: the only thing the paper's ablation changes."""
    window: tuple[int, ...] = (2, 4, 4)
    """(t, h, w) of the non-overlapping 3D windows of the swapped cross-attention; inputs are padded to whole
    windows, and an axis shorter than its window uses a window as long as the axis."""
    swap_every: SwapEvery = "layer"
    """``layer`` or ``block``: see ``SWAP_EVERY``. Only used by ``swap``."""
    streams: Streams = "serial"
    """``serial`` or ``parallel``: where the temporal stream comes from, see ``STREAM_LAYOUTS``."""
    norm_num_groups: int = 32
    """Groups of every GroupNorm; every level's channel count must be divisible by it."""
    temporal_conv_layers: int = 2
    """Conv layers (kernel 3 over time) in the temporal convolution that follows every 2D ResNet block."""
    dropout: float = 0.0
    """Dropout in ResNet blocks and temporal convolutions (ModelScope trains with 0.1)."""
    fps_conditioning: bool = False
    """Condition on the clip's frame rate (frames per second after sampling, ``data.fps`` or source fps /
    ``data.stride``): sinusoids -> MLP added to the timestep embedding, last layer zero-initialised (Open-Sora,
    VideoLDM). The model then takes ``fps`` in ``forward``; single-frame inputs (T = 1) ignore it."""
    gradient_checkpointing: bool = False
    """Recompute each ResNet and transformer block in the backward pass instead of storing activations."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Free-form metadata kept with the config (e.g. where pretrained weights came from); unused by the model."""

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        """What one field's type cannot say: sizes that must agree with each other."""
        def fail(message: str) -> None:
            raise ValueError(message)

        if not self.block_channels or any(c <= 0 for c in self.block_channels):
            fail(f"block_channels must be a non-empty list of positive ints, got {list(self.block_channels)}")
        if len(self.window) != 3 or any(int(w) < 1 for w in self.window):
            fail(f"window must be three positive ints (t, h, w), got {list(self.window)}")
        for name in ("in_channels", "out_channels", "layers_per_block", "attention_head_dim",
                     "cross_attention_dim", "norm_num_groups", "temporal_conv_layers"):
            if getattr(self, name) < 1:
                fail(f"{name} must be at least 1, got {getattr(self, name)}")
        for c in self.block_channels:
            if c % self.norm_num_groups:
                fail(f"every block channel count must be divisible by norm_num_groups={self.norm_num_groups}, "
                     f"{c} is not; change norm_num_groups or block_channels")
            if c % self.attention_head_dim:
                fail(f"every block channel count must be divisible by attention_head_dim={self.attention_head_dim}"
                     f", {c} is not")
        if self.attention_levels is not None and len(self.attention_levels) != len(self.block_channels):
            fail(f"attention_levels has {len(self.attention_levels)} entries but there are "
                 f"{len(self.block_channels)} levels in block_channels; give one true/false per level")
        if not 0.0 <= self.dropout < 1.0:
            fail(f"dropout must be in [0, 1), got {self.dropout}")
        return self

    @property
    def levels_with_attention(self) -> tuple[bool, ...]:
        """``attention_levels`` with its default resolved."""
        if self.attention_levels is not None:
            return self.attention_levels
        n = len(self.block_channels)
        return tuple(i < n - 1 or n == 1 for i in range(n))

    @property
    def downsample_factor(self) -> int:
        """H and W of the latent must be divisible by this (each level but the last halves them)."""
        return 2 ** (len(self.block_channels) - 1)

    @classmethod
    def tiny(cls, **overrides: Any) -> UNetConfig:
        """A model of a few hundred thousand parameters for CPU tests: 2 levels, 1 layer each, small windows."""
        base: dict[str, Any] = dict(
            block_channels=(32, 64), layers_per_block=1, attention_head_dim=16, cross_attention_dim=32,
            window=(2, 2, 2), norm_num_groups=8,
        )
        base.update(overrides)
        return cls.from_dict(base)
