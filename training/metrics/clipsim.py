"""CLIPSIM (Wu et al. 2021, GODIVA; used by Make-A-Video, VideoLDM, LaVie): the mean CLIP similarity between
each generated frame and its prompt.

For each frame, the cosine similarity between CLIP's image embedding of the frame and CLIP's text embedding
of the prompt (both projected, L2-normalised); CLIPSIM is the mean over frames and videos. Reported as the
raw cosine in [-1, 1]; papers often print it as is (e.g. 0.2929) and some scale it by 100. The CLIP model
and its processor load with ``from_pretrained`` from a local directory (``eval.clip_model``), never from
the network; published numbers mostly use ViT-B/32 (``openai/clip-vit-base-patch32``) or ViT-L/14.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CLIP_HELP = (
    "eval.clip_model must be a local directory holding a transformers CLIPModel and its CLIPProcessor, e.g. "
    "`hf download openai/clip-vit-base-patch32 --local-dir weights/clip-vit-base-patch32` once, then "
    "--clip-model weights/clip-vit-base-patch32 (or --set eval.clip_model=...)"
)


def clipsim_from_embeddings(image: torch.Tensor | np.ndarray, text: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-frame cosine similarity between (N, D) image embeddings and one (D,) text embedding (or (N, D))."""
    image = torch.as_tensor(image, dtype=torch.float64)
    text = torch.as_tensor(text, dtype=torch.float64)
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return (image * text).sum(dim=-1).numpy()


def _embedding(output: object) -> torch.Tensor:
    """The projected embedding of ``get_*_features`` (a tensor, or an output whose ``pooler_output`` holds it)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


class ClipScorer:
    """CLIP from a local directory; ``similarities(frames, prompt)`` gives each frame's cosine to the prompt."""

    def __init__(self, model_dir: str | Path, device: torch.device | str = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        if not model_dir or not Path(model_dir).is_dir():
            raise FileNotFoundError(f"CLIP directory {str(model_dir)!r} not found: {CLIP_HELP}")
        self.model = CLIPModel.from_pretrained(str(model_dir)).to(device).eval().requires_grad_(False)
        self.processor = CLIPProcessor.from_pretrained(str(model_dir))
        self.device = torch.device(device)
        tokenizer = self.processor.tokenizer
        self.max_tokens = min(tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        tokens = self.processor.tokenizer([prompt], padding=True, truncation=True,
                                          max_length=self.max_tokens, return_tensors="pt")
        return _embedding(self.model.get_text_features(input_ids=tokens.input_ids.to(self.device),
                                                       attention_mask=tokens.attention_mask.to(self.device)))[0]

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 frames -> (T, D) projected image embeddings."""
        pixels = self.processor.image_processor(images=list(frames), return_tensors="pt").pixel_values
        return _embedding(self.model.get_image_features(pixel_values=pixels.to(self.device)))

    def similarities(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        """Each frame's cosine similarity to ``prompt`` (T,)."""
        return clipsim_from_embeddings(self.image_embeddings(frames).cpu(), self.text_embedding(prompt).cpu())
