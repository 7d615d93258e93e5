"""The frozen encoders around the U-Net: a CLIP text model for captions, Stable Diffusion's VAE for frames.

Both load with ``from_pretrained`` from local directories named in the config (weights are never
fetched here, so a missing path is an error that says how to get them), are put in eval mode and
have their gradients switched off.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from transformers import AutoTokenizer, CLIPTextModel

WEIGHTS_HELP = (
    "download them once, e.g. `hf download stabilityai/stable-diffusion-2-1-base --include 'vae/*' "
    "'text_encoder/*' 'tokenizer/*' --local-dir weights/sd21` and point model.vae, model.text_encoder and "
    "model.tokenizer at weights/sd21/vae, weights/sd21/text_encoder and weights/sd21/tokenizer"
)


def _require(path: str, what: str) -> str:
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"{what} directory {path!r} not found: {WEIGHTS_HELP}")
    return path


def _freeze(module: torch.nn.Module) -> None:
    module.eval()
    module.requires_grad_(False)


class TextEncoder:
    """Captions -> (B, L, hidden) token embeddings from the last hidden layer of a CLIP text model."""

    def __init__(self, model_dir: str, tokenizer_dir: str, max_tokens: int | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(_require(tokenizer_dir, "tokenizer"))
        self.model = CLIPTextModel.from_pretrained(_require(model_dir, "text encoder")).to(device)
        _freeze(self.model)
        self.max_tokens = max_tokens or min(self.tokenizer.model_max_length,
                                            self.model.config.max_position_embeddings)
        self.device = torch.device(device)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(captions, padding="max_length", max_length=self.max_tokens, truncation=True,
                                return_tensors="pt")
        return self.model(input_ids=tokens.input_ids.to(self.device)).last_hidden_state


class VideoVAE:
    """Frames <-> latents with an image ``AutoencoderKL`` applied frame by frame, scaled by its scaling_factor."""

    def __init__(self, vae_dir: str, device: torch.device | str = "cpu") -> None:
        self.model = AutoencoderKL.from_pretrained(_require(vae_dir, "VAE")).to(device)
        _freeze(self.model)
        self.scale = float(self.model.config.scaling_factor)
        self.downsample = 2 ** (len(self.model.config.block_out_channels) - 1)
        self.channels = int(self.model.config.latent_channels)
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 -> (B, C, T, H/f, W/f) latents, sampled from the posterior."""
        return self.sample(*self.posterior(video))

    @torch.no_grad()
    def posterior(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, H, W, 3) uint8 -> the mean and log-variance of each frame's posterior, each (B, T, C, H/f, W/f),
        unscaled: what precomputed latents store, so that training still samples the posterior (``sample``)."""
        b, t = video.shape[:2]
        pixels = video.to(self.device).flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1
        dist = self.model.encode(pixels).latent_dist
        return dist.mean.unflatten(0, (b, t)), dist.logvar.unflatten(0, (b, t))

    @torch.no_grad()
    def sample(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Scaled (B, C, T, h, w) latents drawn from the posterior ``(mean, logvar)`` (each (B, T, C, h, w)).

        The noise is drawn by diffusers' own ``DiagonalGaussianDistribution`` in its frame-major shape from the
        global RNG, so latents sampled from stored posteriors are those ``encode`` gives from the video. They are
        returned contiguous: the training noise (``randn_like``) follows a tensor's memory layout, which must not
        depend on where the posterior came from (the VAE's convolutions may leave it channels-last).
        """
        b, t = mean.shape[:2]
        parameters = torch.cat([mean.flatten(0, 1), logvar.flatten(0, 1)], dim=1).to(self.device).contiguous()
        latents = DiagonalGaussianDistribution(parameters).sample() * self.scale
        return latents.unflatten(0, (b, t)).transpose(1, 2).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) latents -> (B, T, h*f, w*f, 3) uint8 frames."""
        b, t = latents.shape[0], latents.shape[2]
        pixels = self.model.decode(latents.transpose(1, 2).flatten(0, 1) / self.scale).sample
        frames = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return frames.permute(0, 2, 3, 1).unflatten(0, (b, t)).cpu()
