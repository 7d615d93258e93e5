"""The demo's last act: train a few steps of the TINY model on the corpus just built and sample one video.

The U-Net is ``configs/train_tiny.yaml``'s (about a million parameters) and the text encoder and
VAE are the UNTRAINED tiny ones of ``demo.tiny_training``: this shows the training and sampling machinery
running end to end on real shards, and the video it writes is noise-like by construction.
"""

from __future__ import annotations

from pathlib import Path

from demo.tiny_training import make_tiny_pretrained
from jobs.train import absolute_paths, run_training
from training.config import load_config
from training.sample import generate, write_mp4

ROOT = Path(__file__).resolve().parent.parent


def train_and_sample(corpus: Path, outputs: Path, steps: int = 20, prompt: str = "a test card") -> Path:
    """Train ``steps`` steps on ``corpus`` into ``outputs/train-tiny`` and sample ``outputs/tiny-sample.mp4``."""
    cfg = load_config(ROOT / "configs" / "train_tiny.yaml")
    cfg.data.corpora[0].path = str(corpus)
    for name, path in make_tiny_pretrained(outputs / "tiny-pretrained").items():
        setattr(cfg.model, name, path)
    cfg.output, cfg.steps, cfg.checkpoint_every = str(outputs / "train-tiny"), steps, steps
    cfg = absolute_paths(cfg)
    run_training(cfg, resume=False)
    frames = generate(cfg.output, prompt, steps=10, guidance=3.0)
    video = write_mp4(frames, outputs / "tiny-sample.mp4")
    print(f"\ntrained {steps} steps of a TINY model with UNTRAINED tiny text encoder and VAE "
          f"(a test of the machinery, not a video model): {cfg.output}\n"
          f"  sampled {video} ({frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}, "
          f"prompt {prompt!r}); expect noise")
    return video
