"""Attention layers of the video U-Net: spatial and temporal transformers, and the layers that fuse them.

Everything goes through ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
kernels on a GPU). Whatever the attention is restricted to (one frame's tokens, one position's frames, one
3D window) is folded into the batch dimension, so no mask is needed except where windows had to be padded.

Our reading of VideoFactory (Wang et al., arXiv 2305.10874, "Swap Attention in Spatiotemporal Diffusions"):
the model starts from a factorized ModelScope-style U-Net in which each transformer block runs a *spatial*
transformer (self-attention over the tokens of each frame, cross-attention to the text, feed-forward) and
then a *temporal* transformer (self-attention over the frames at each position). Their outputs are the two
streams. The paper adds a cross-attention between the streams inside non-overlapping 3D windows (t, h, w):
queries come from one stream, keys and values from the other, and the roles swap from one block to the
next so that each stream in turn is refined by the other ("mutual reinforcement"). We add the fused result
residually to the block's factorized output (the temporal stream, which already contains the spatial one
through its residual path) and zero-initialise its output projection, so a pretrained factorized model is
exactly unchanged at step 0 whichever stream queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STREAMS = ("spatial", "temporal")


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids of ``positions`` (any float/int 1D tensor) -> (len, dim); used for diffusion
    timesteps and frame indices. Layout [cos | sin] as in diffusers' ``get_timestep_embedding`` with
    ``flip_sin_to_cos=True`` (Stable Diffusion's), so pretrained time embeddings keep their meaning."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    args = positions.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class Attention(nn.Module):
    """Multi-head (cross-)attention over token sequences (N, L, C) via ``scaled_dot_product_attention``.

    Projections follow Stable Diffusion's layout (``to_q``/``to_k``/``to_v`` without bias, ``to_out`` with
    bias) so that pretrained weights map one to one. ``zero_init_out`` makes the layer output zero at init.
    """

    def __init__(self, dim: int, head_dim: int, context_dim: int | None = None, zero_init_out: bool = False):
        super().__init__()
        self.heads = dim // head_dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        if zero_init_out:
            self.zero_output()

    def zero_output(self) -> None:
        """Zero the output projection: the layer then returns 0 whatever its input."""
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (N, Lq, C) attends to ``context`` (N, Lk, Cc) (itself when None); ``mask`` (bool, True =
        attend) broadcastable to (N, heads, Lq, Lk), only where some keys must be ignored."""
        context = x if context is None else context
        n, lq, c = x.shape
        lk = context.shape[1]
        q = self.to_q(x).view(n, lq, self.heads, -1).transpose(1, 2)
        k = self.to_k(context).view(n, lk, self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(n, lk, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(n, lq, c))


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x inner width, as in Stable Diffusion's transformer blocks."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult * 2)
        self.proj_out = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(hidden * F.gelu(gate))


class _FactorizedTransformer(nn.Module):
    """What the spatial and temporal transformers share: GroupNorm and input projection, a self-attention
    and a feed-forward (pre-LayerNorm, residual), and an output projection added back to the input."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.norm_attn = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, head_dim)
        self.norm_ff = nn.LayerNorm(channels)
        self.ff = FeedForward(channels)
        self.proj_out = nn.Linear(channels, channels)


class SpatialTransformer(_FactorizedTransformer):
    """Per-frame image transformer: self-attention over each frame's H*W tokens, cross-attention to the
    text, feed-forward (Stable Diffusion's ``Transformer2DModel`` applied to every frame)."""

    def __init__(self, channels: int, head_dim: int, context_dim: int, groups: int):
        super().__init__(channels, head_dim, groups)
        self.norm_text = nn.LayerNorm(channels)
        self.text_attn = Attention(channels, head_dim, context_dim=context_dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, T, H, W), ``text`` (B, L, Dtext) -> (B, C, T, H, W)."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        tokens = self.proj_in(self.norm(frames).flatten(2).transpose(1, 2))  # (B*T, H*W, C)
        tokens = tokens + self.self_attn(self.norm_attn(tokens))
        # Text attention is per token, so all frames of a video can share one batch row: no copy of the text.
        tokens = tokens.reshape(b, t * h * w, c)
        tokens = tokens + self.text_attn(self.norm_text(tokens), context=text)
        tokens = tokens + self.ff(self.norm_ff(tokens))
        out = self.proj_out(tokens).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + out


class TemporalTransformer(_FactorizedTransformer):
    """Self-attention over the T frames at each spatial position, then feed-forward. Frame order enters
    through sinusoidal frame-index embeddings added to the tokens (attention alone is order-blind). The
    output projection starts at zero, so a new temporal transformer leaves a pretrained image model's
    features untouched (ModelScope / AnimateDiff practice)."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__(channels, head_dim, groups)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the output projection, so the layer is the identity (a video-only layer, see
        ``training.model.pretrained``)."""
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, T, H, W) -> (B, C, T, H, W); the identity for a single frame (T = 1: images)."""
        return x + self.update(x)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """What the layer adds to ``x`` (B, C, T, H, W): zero at init and for a single frame. Separate from
        ``forward`` so that a block can add it to another stream (``streams: parallel``)."""
        b, c, t, h, w = x.shape
        if t == 1:
            return torch.zeros_like(x)
        tokens = self.proj_in(self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c))  # (B*H*W, T, C)
        frame_pos = sinusoidal_embedding(torch.arange(t, device=x.device), c).to(tokens.dtype)
        tokens = tokens + self.self_attn(self.norm_attn(tokens + frame_pos))
        tokens = tokens + self.ff(self.norm_ff(tokens))
        return self.proj_out(tokens).view(b, h, w, t, c).permute(0, 4, 3, 1, 2)


@dataclass(frozen=True)
class WindowLayout:
    """How a (T, H, W) volume is tiled by non-overlapping 3D windows, padding at the far ends.

    An axis shorter than its window uses a window as long as the axis (a 1-frame clip gets 1-frame
    windows rather than a window that is mostly padding)."""

    size: tuple[int, int, int]
    window: tuple[int, int, int]

    @classmethod
    def fit(cls, size: tuple[int, int, int], window: tuple[int, int, int]) -> WindowLayout:
        return cls(size=size, window=tuple(min(w, s) for w, s in zip(window, size, strict=True)))

    @property
    def padding(self) -> tuple[int, int, int]:
        return tuple(-s % w for s, w in zip(self.size, self.window, strict=True))

    @property
    def padded(self) -> bool:
        return any(self.padding)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C) -> (B * windows, wt*wh*ww, C); windows of one video are consecutive rows."""
        pt, ph, pw = self.padding
        if self.padded:
            x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pt))
        b, t, h, w, c = x.shape
        wt, wh, ww = self.window
        x = x.view(b, t // wt, wt, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return x.reshape(-1, wt * wh * ww, c)

    def reverse(self, windows: torch.Tensor, batch: int) -> torch.Tensor:
        """Inverse of ``partition``, cropping the padding: -> (B, T, H, W, C)."""
        wt, wh, ww = self.window
        t, h, w = (s + p for s, p in zip(self.size, self.padding, strict=True))
        c = windows.shape[-1]
        x = windows.view(batch, t // wt, h // wh, w // ww, wt, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
        x = x.reshape(batch, t, h, w, c)
        st, sh, sw = self.size
        return x[:, :st, :sh, :sw]

    def key_mask(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """Bool (B * windows, 1, 1, tokens): True for real tokens, so padding is never attended to.
        ``None`` when nothing was padded: the fast, mask-free path."""
        if not self.padded:
            return None
        real = torch.ones(1, *self.size, 1, dtype=torch.bool, device=device)
        mask = self.partition(real)[..., 0]  # (windows, tokens)
        return mask.repeat(batch, 1)[:, None, None, :]


class _AttentionUpdate(nn.Module):
    """Base of the layers in the swap slot: an ``Attention`` whose zero output projection makes the update 0."""

    attn: Attention

    def reset_to_identity(self) -> None:
        """Zero the output projection: the update is 0, so the block it fuses into is unchanged."""
        self.attn.zero_output()


class _QueryContextUpdate(_AttentionUpdate):
    """An attention update with one LayerNorm for its queries and one for its keys and values."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.attn = Attention(channels, head_dim, zero_init_out=True)


class SwapWindowCrossAttention(_QueryContextUpdate):
    """VideoFactory's spatiotemporal cross-attention inside non-overlapping 3D windows.

    ``query_stream`` ("spatial" or "temporal") is fixed at construction from the layer's position in the
    U-Net (the ``swap`` variant alternates it, the one-direction variants keep it); the other stream gives
    keys and values. Returns the update to add to the block's output; zero at init (zero ``to_out``).
    """

    def __init__(self, channels: int, head_dim: int, window: tuple[int, int, int], query_stream: str):
        if query_stream not in STREAMS:
            raise ValueError(f"query_stream must be one of {STREAMS}, got {query_stream!r}")
        super().__init__(channels, head_dim)
        self.query_stream = query_stream
        self.window = window

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """Both streams (B, C, T, H, W) -> update (B, C, T, H, W)."""
        query, key_value = (spatial, temporal) if self.query_stream == "spatial" else (temporal, spatial)
        b, _, t, h, w = query.shape
        layout = WindowLayout.fit((t, h, w), self.window)
        q = layout.partition(self.norm_q(query.permute(0, 2, 3, 4, 1)))
        kv = layout.partition(self.norm_kv(key_value.permute(0, 2, 3, 4, 1)))
        out = self.attn(q, context=kv, mask=layout.key_mask(b, query.device))
        return layout.reverse(out, b).permute(0, 4, 1, 2, 3)


class TemporalSelfAttention(_QueryContextUpdate):
    """The ``factorized_matched`` control: a second self-attention over the T frames at each spatial position,
    on the temporal stream only, in the slot where ``swap`` has its window cross-attention.

    It has exactly the parameters of ``SwapWindowCrossAttention`` (two LayerNorms, here one for the queries and
    one for the keys and values, and the same ``Attention``), so ``factorized_matched`` has the windowed arms'
    parameter count with no attention between the streams and no spatial mixing: the control that tells
    "cross-stream attention helps" from "more parameters help". Zero output projection, as the other fusions.
    """

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """Both streams (B, C, T, H, W) -> update (B, C, T, H, W); only the temporal stream is used."""
        del spatial  # same signature as the swap layer; this control never looks at the other stream
        b, c, t, h, w = temporal.shape
        tokens = temporal.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # (B*H*W, T, C)
        tokens = tokens + sinusoidal_embedding(torch.arange(t, device=tokens.device), c).to(tokens.dtype)
        out = self.attn(self.norm_q(tokens), context=self.norm_kv(tokens))
        return out.view(b, h, w, t, c).permute(0, 4, 3, 1, 2)


class GlobalSpatiotemporalAttention(_AttentionUpdate):
    """The ``full3d`` ablation: self-attention over all T*H*W tokens of the block's output, in the slot where
    ``swap`` has its window cross-attention (same residual, same zero-initialised output projection), so
    the two compare with everything else unchanged. Cost grows with (T*H*W)^2."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = Attention(channels, head_dim, zero_init_out=True)

    def forward(self, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """Both streams (B, C, T, H, W) -> update (B, C, T, H, W); only the temporal stream is used."""
        del spatial  # same signature as the swap layer; self-attention needs one stream
        b, c, t, h, w = temporal.shape
        tokens = self.norm(temporal.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, c))
        return self.attn(tokens).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)
