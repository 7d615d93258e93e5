"""Aesthetic score: a LAION-style predictor head on CLIP image embeddings of the sampled frames (local weights).

The LAION aesthetic predictor (christophschuhmann/improved-aesthetic-predictor, the "v2" scores behind
LAION-Aesthetics) is a small MLP on the L2-normalised CLIP ViT-L/14 image embedding, trained to predict
the 1-10 rating people gave a picture (SAC, LOGOS, AVA). Here each of ``filter.aesthetic.frames`` evenly
spaced frames of the filter's shared sample is embedded by a ``CLIPVisionModelWithProjection`` loaded
from a local directory, the head scores it, and the clip's ``aesthetic`` is the mean over its frames.

Both sets of weights are local files, never downloaded at run time: the CLIP directory
(``filter.aesthetic.clip_model``, e.g. ``hf download openai/clip-vit-large-patch14``) and the head as
safetensors (``filter.aesthetic.head``: the published ``sac+logos+ava1-l14-linearMSE.pth`` converted once
with ``safetensors.torch.save_file(torch.load(path, weights_only=True), out)``; its keys ``layers.0``,
``layers.2``, ``layers.4``, ``layers.6``, ``layers.7`` are this module's ``AestheticHead``). Where either
is absent the score is off, with a message saying so (``availability``), and no clip is scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.config import AestheticFilterConfig
from curation.frames import FrameSample

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_HELP = ("get the CLIP ViT-L/14 weights once with `hf download openai/clip-vit-large-patch14 --local-dir "
                "models/clip-vit-large-patch14`, and the LAION head by converting improved-aesthetic-predictor's "
                "sac+logos+ava1-l14-linearMSE.pth to safetensors (README, \"Aesthetic score\")")


def aesthetic_head(dim: int) -> nn.Module:
    """The improved-aesthetic-predictor MLP under ``layers`` (its indices, so its converted state dict loads as it is).

    Built here rather than at import, so that reading the filter's code (the driver does) loads no torch.
    """
    from torch import nn

    head = nn.Module()
    head.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))
    return head


def availability(cfg: AestheticFilterConfig) -> str | None:
    """None when the score can run; otherwise the sentence saying why it is off."""
    if not cfg.enabled:
        return "filter.aesthetic.enabled is false"
    missing = [f"{name} {path!r}" for name, path, ok in (
        ("filter.aesthetic.clip_model", cfg.clip_model, Path(cfg.clip_model).is_dir()),
        ("filter.aesthetic.head", cfg.head, Path(cfg.head).is_file())) if not ok]
    if missing:
        return f"the aesthetic score is off: {' and '.join(missing)} not found; {WEIGHTS_HELP}"
    return None


class ClipEmbedder:
    """A local CLIP vision tower with its projection, loaded once per worker: L2-normalised image embeddings.

    Shared by the aesthetic score and the near-duplicates' embedding mode (``curation.filters.phash``).
    """

    def __init__(self, model_dir: str, gpu: bool = False) -> None:
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.device = torch.device("cuda" if gpu else "cpu")
        self.model = CLIPVisionModelWithProjection.from_pretrained(model_dir, local_files_only=True)
        self.model = self.model.to(self.device).eval().requires_grad_(False)
        self.processor = CLIPImageProcessor.from_pretrained(model_dir, local_files_only=True)
        self.dim = int(self.model.config.projection_dim)

    def embed(self, frames: list[np.ndarray]) -> torch.Tensor:
        """``(len(frames), dim)`` unit-length embeddings of RGB frames (on the model's device)."""
        import torch

        with torch.no_grad():
            pixels = self.processor(images=frames, return_tensors="pt").pixel_values.to(self.device)
            embeddings = self.model(pixel_values=pixels).image_embeds
            return embeddings / embeddings.norm(dim=-1, keepdim=True)


class AestheticScorer:
    """The head on a ``ClipEmbedder``'s embeddings; ``score(sample)`` gives a clip's scores."""

    def __init__(self, cfg: AestheticFilterConfig, gpu: bool = False, clip: ClipEmbedder | None = None) -> None:
        from safetensors.torch import load_file

        self.cfg = cfg
        self.clip = clip or ClipEmbedder(cfg.clip_model, gpu)
        self.head = aesthetic_head(self.clip.dim)
        self.head.load_state_dict(load_file(cfg.head))  # strict: a head for another CLIP size is an error
        self.head = self.head.to(self.clip.device).eval().requires_grad_(False)

    def frame_scores(self, frames: list[np.ndarray]) -> np.ndarray:
        """Each RGB frame's predicted rating."""
        import torch

        with torch.no_grad():
            return self.head.layers(self.clip.embed(frames)).squeeze(-1).float().cpu().numpy()

    def score(self, sample: FrameSample) -> dict[str, Any]:
        """The clip's mean rating over ``frames`` evenly spaced frames of the sample, and its lowest."""
        count = min(self.cfg.frames, len(sample.frames))
        picked = [sample.frames[round(i * (len(sample.frames) - 1) / max(1, count - 1))] for i in range(count)]
        scores = self.frame_scores(picked)
        return {"aesthetic": round(float(scores.mean()), 4), "aesthetic_min": round(float(scores.min()), 4)}
