"""Objective and sampler against an oracle: a denoiser that knows the clean latents predicts exactly.

With the exact eps (or v) the loss is zero and DDIM lands on the clean latents; with guidance the
sampler must land on ``uncond + g * (cond - uncond)`` of the two targets. Any wrong sign, scale or
timestep convention in the schedule, the targets or the guidance breaks these equalities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from jobs.train import main as train_main
from training.config import DiffusionConfig, load_config
from training.diffusion import ddim_sample, diffusion_loss, make_scheduler

ROOT = Path(__file__).resolve().parent.parent

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


@pytest.mark.parametrize("objective, zero_snr", [("eps", False), ("v", True)])
@pytest.mark.parametrize("steps", [50, 20, 7])
def test_ddim_starts_at_the_last_training_timestep_with_trailing_spacing(objective: str, zero_snr: bool,
                                                                          steps: int) -> None:
    """The sampler's first step is t = T - 1, the noise level training ends at, and the steps are spaced
    "trailing": round(arange(T, 0, -T / steps)) - 1 (999, 979, ..., 19 for 50 steps; "leading" gave 980, ..., 0)."""
    scheduler = make_scheduler(DiffusionConfig(objective=objective, zero_terminal_snr=zero_snr))
    seen: list[int] = []

    def record(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    text = torch.ones(SHAPE[0], 1, 1, dtype=torch.float64)
    ddim_sample(record, scheduler, text, text[:1], SHAPE, steps=steps, guidance=1.0)
    total = scheduler.config.num_train_timesteps
    assert seen[0] == total - 1 == 999
    assert seen == (np.round(np.arange(total, 0, -total / steps)).astype(int) - 1).tolist()
    assert len(seen) == steps and seen[-1] == round(total / steps) - 1


def test_zero_terminal_snr_with_eps_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With zero terminal SNR, alpha_bar(999) = 0 and DDIM divides by sqrt(alpha_bar): eps gives NaN samples."""
    train_yaml = ROOT / "configs" / "train.yaml"
    with pytest.raises(ValueError, match="zero_terminal_snr: true needs diffusion.objective: v"):
        load_config(train_yaml, ["diffusion.zero_terminal_snr=true", "diffusion.objective=eps"]).check()
    load_config(train_yaml, ["diffusion.zero_terminal_snr=true", "diffusion.objective=v"]).check()
    load_config(train_yaml, ["diffusion.zero_terminal_snr=false", "diffusion.objective=eps"]).check()
    code = train_main(["--config", str(train_yaml), "--output", str(tmp_path), "--set",
                       "diffusion.zero_terminal_snr=true", "--set", "diffusion.objective=eps"])
    assert code == 2 and "needs diffusion.objective: v" in caplog.text
    assert not any(tmp_path.iterdir())
