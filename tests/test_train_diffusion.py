"""Objective and sampler against an oracle: a denoiser that knows the clean latents predicts exactly.

With the exact eps (or v) the loss is zero and DDIM lands on the clean latents; with guidance the
sampler must land on ``uncond + g * (cond - uncond)`` of the two targets. Any wrong sign, scale or
timestep convention in the schedule, the targets or the guidance breaks these equalities.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from training.config import DiffusionConfig
from training.diffusion import ddim_sample, diffusion_loss, make_scheduler

SHAPE = (2, 4, 3, 4, 6)


def oracle(scheduler: DDPMScheduler, clean: dict[float, torch.Tensor]):
    """A denoiser whose prediction is exact for the clean latents ``clean[text value]``."""
    alphas = scheduler.alphas_cumprod

    def predict(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x0 = torch.stack([clean[float(v)][i % SHAPE[0]] for i, v in enumerate(text[:, 0, 0])])
        a = alphas[t.long()].view(-1, 1, 1, 1, 1).to(x.dtype)
        eps = (x - a.sqrt() * x0) / (1 - a).clamp_min(1e-12).sqrt()
        if scheduler.config.prediction_type == "epsilon":
            return eps
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    return predict


@pytest.mark.parametrize("objective, zero_snr", [("eps", False), ("v", False), ("v", True)])
def test_an_exact_prediction_has_zero_loss(objective: str, zero_snr: bool) -> None:
    scheduler = make_scheduler(DiffusionConfig(objective=objective, zero_terminal_snr=zero_snr))
    latents = torch.randn(SHAPE, dtype=torch.float64)
    text = torch.ones(SHAPE[0], 1, 1, dtype=torch.float64)
    torch.manual_seed(0)
    loss = diffusion_loss(oracle(scheduler, {1.0: latents}), scheduler, latents, text)
    assert loss.item() < 1e-8


def test_zero_terminal_snr_makes_the_last_step_pure_noise() -> None:
    assert make_scheduler(DiffusionConfig(zero_terminal_snr=True)).alphas_cumprod[-1] == 0
    assert make_scheduler(DiffusionConfig()).alphas_cumprod[-1] > 1e-3


@pytest.mark.parametrize("objective, zero_snr", [("eps", False), ("v", True)])
def test_ddim_with_guidance_lands_on_the_guided_target(objective: str, zero_snr: bool) -> None:
    scheduler = make_scheduler(DiffusionConfig(objective=objective, zero_terminal_snr=zero_snr))
    cond, uncond = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    model = oracle(scheduler, {1.0: cond, 0.0: uncond})
    text = torch.ones(SHAPE[0], 1, 1, dtype=torch.float64)
    empty = torch.zeros(1, 1, 1, dtype=torch.float64)
    plain = ddim_sample(model, scheduler, text, empty, SHAPE, steps=20, guidance=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert torch.allclose(plain, cond, atol=1e-4)
    guided = ddim_sample(model, scheduler, text, empty, SHAPE, steps=20, guidance=3.0,
                         generator=torch.Generator().manual_seed(0))
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-4)
