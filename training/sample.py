"""Text -> video with a trained checkpoint: DDIM with classifier-free guidance, decoded by the VAE, as mp4."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from training.checkpoint import load_checkpoint_config, load_weights, resolve_checkpoint
from training.config import TrainConfig
from training.diffusion import ddim_sample, make_scheduler
from training.encoders import TextEncoder, VideoVAE
from training.trainer import build_unet


def generate(checkpoint: str | Path, prompt: str, steps: int = 50, guidance: float = 7.5, seed: int = 0,
             frames: int | None = None, use_ema: bool = True, device: str | None = None,
             overrides: Iterable[str] = (), fps: float | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames for ``prompt`` from ``checkpoint`` (a checkpoint or a training output dir).

    ``overrides`` (``--set`` style, ``"model.vae=/elsewhere/vae"``) change the checkpoint's training config for
    this sample only: where the encoders are now, or another ``data.width``/``data.height``. Keys that shape
    the weights (``model.unet``) must stay as trained, or loading the weights fails. ``fps`` is the frame rate a
    model with ``fps_conditioning`` is asked for (default: the config's ``data.fps``, else 8).
    """
    path = resolve_checkpoint(checkpoint)
    cfg = load_checkpoint_config(path, overrides)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    text_encoder = TextEncoder(cfg.model.text_encoder, cfg.model.tokenizer, cfg.data.max_caption_tokens, device)
    vae = VideoVAE(cfg.model.vae, device)
    f = vae.downsample
    latent_hw = (cfg.data.height // f, cfg.data.width // f)
    model = build_unet(cfg, text_encoder.hidden_size, vae.channels, latent_hw)
    load_weights(path, model, ema=use_ema)
    model.to(device).eval()
    text, empty = text_encoder([prompt]), text_encoder([""])
    shape = (1, vae.channels, frames or cfg.data.frames, *latent_hw)
    generator = torch.Generator(device).manual_seed(seed)
    latents = ddim_sample(model, make_scheduler(cfg.diffusion), text, empty, shape, steps, guidance, generator,
                          fps=frame_rate(cfg, fps) if cfg.model.unet.fps_conditioning else None)
    return vae.decode(latents)[0].numpy()


def frame_rate(cfg: TrainConfig, fps: float | None = None) -> float:
    """The frame rate a sample is asked for (a model with ``fps_conditioning``) and written at: ``fps``, else the
    rate the model was trained at (``data.fps``), else 8 (``data.stride`` takes frames at the clips' own rates)."""
    return fps or cfg.data.fps or 8.0


def write_mp4(frames: np.ndarray, path: str | Path, fps: float = 8.0) -> Path:
    """Encode (T, H, W, 3) uint8 frames as H.264 yuv420p mp4 with PyAV (written to a temporary name first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    with av.open(str(partial), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    partial.replace(path)
    return path
