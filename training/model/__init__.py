"""The swap-attention latent video diffusion U-Net (VideoFactory) and its configuration."""

from training.model.config import ATTENTION_VARIANTS, UNetConfig
from training.model.unet import VideoUNet

__all__ = ["ATTENTION_VARIANTS", "UNetConfig", "VideoUNet"]
