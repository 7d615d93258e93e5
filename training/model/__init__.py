"""The swap-attention latent video diffusion U-Net (VideoFactory) and its configuration.

``VideoUNet`` is imported on first use, so that reading a config (``training.model.config``, part of the
training config) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.model.config import ATTENTION_VARIANTS, UNetConfig

if TYPE_CHECKING:
    from training.model.unet import VideoUNet

__all__ = ["ATTENTION_VARIANTS", "UNetConfig", "VideoUNet"]


def __getattr__(name: str) -> Any:
    if name == "VideoUNet":
        from training.model.unet import VideoUNet

        return VideoUNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
