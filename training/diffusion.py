"""The diffusion objective and the sampler, on diffusers' schedulers.

Training noises latents with a ``DDPMScheduler`` (linear or scaled-linear betas, optionally rescaled
to zero terminal SNR) and regresses the noise (eps) or the velocity (v). Sampling runs a
``DDIMScheduler`` built from the same config, with classifier-free guidance against the empty caption,
on "trailing" timesteps: ``round(arange(T, 0, -T / steps)) - 1``, so the first step is t = T - 1 as in
training (999, 979, ..., 19 for T = 1000 and 50 steps; "leading" spacing would give 980, ..., 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from training.config import PREDICTION_TYPES, DiffusionConfig

#: (latents, timesteps, text embeddings) -> prediction, the U-Net's signature.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def make_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, beta_start=cfg.beta_start,
        beta_end=cfg.beta_end, prediction_type=PREDICTION_TYPES[cfg.objective],
        rescale_betas_zero_snr=cfg.zero_terminal_snr, clip_sample=False,
        # Sampling starts at the last training timestep (999 of 1000), the noisiest level training covers:
        # "trailing" spacing (Lin et al. 2023, sec. 3.3). "leading" would start at 980 for 50 steps, taking pure
        # noise for x_980 (which still holds signal); zero terminal SNR needs t = 999 in any case.
        timestep_spacing="trailing",
    )


def diffusion_loss(model: Denoiser, scheduler: DDPMScheduler, latents: torch.Tensor,
                   text: torch.Tensor, fps: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the model's prediction and its target, at uniformly drawn timesteps (global torch RNG).
    ``fps`` (B,), the clips' frame rate, is passed on to a model with frame-rate conditioning."""
    noise = torch.randn_like(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
    prediction = model(noisy, t, text) if fps is None else model(noisy, t, text, fps=fps)
    return F.mse_loss(prediction.float(), target.float())


@torch.no_grad()
def ddim_sample(model: Denoiser, scheduler: DDPMScheduler, text: torch.Tensor, empty: torch.Tensor,
                shape: tuple[int, ...], steps: int = 50, guidance: float = 7.5,
                generator: torch.Generator | None = None, fps: float | None = None) -> torch.Tensor:
    """Latents of ``shape`` (B, C, T, h, w) denoised in ``steps`` DDIM steps with classifier-free guidance.

    ``text`` is (B, L, D), ``empty`` the embedding of the empty caption (1 or B, L, D); guidance 1 turns
    the unconditional pass off. ``fps`` is passed on to a model with frame-rate conditioning.
    """
    if fps is not None:
        model = functools.partial(model, fps=fps)

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    latents = torch.randn(shape, generator=generator, device=text.device, dtype=text.dtype)
    latents = latents * ddim.init_noise_sigma
    empty = empty.expand(shape[0], -1, -1)
    for t in ddim.timesteps:
        timesteps = torch.full((shape[0],), int(t), device=text.device)
        if guidance == 1:
            prediction = model(latents, timesteps, text)
        else:
            uncond, cond = model(torch.cat([latents, latents]), torch.cat([timesteps, timesteps]),
                                 torch.cat([empty, text])).chunk(2)
            prediction = uncond + guidance * (cond - uncond)
        latents = ddim.step(prediction, t, latents).prev_sample
    return latents
