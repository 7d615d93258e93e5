"""Sharpness and compression: a weight-free blur score and blockiness score of the decoded frames.

Both are computed on the luma (Rec. 601) of the sampled frames, and the clip's score is the MEDIAN
over its frames, so one frame caught in a fade, a flash or a whip pan does not decide the clip.

* ``sharpness``: the variance of the Laplacian of the luma (Pech-Pacheco et al., "Diatom autofocusing in
  brightfield microscopy", ICPR 2000; the common "variance of Laplacian" blur measure), with OpenCV's
  4-neighbour Laplacian (``ksize=1``) on luma in 0-255. The variance of a Laplacian grows as a picture is
  downscaled (the same detail spans fewer pixels), so each frame is first resized (area averaging down,
  bicubic up) to a fixed short side, ``filter.sharpness.short_side`` (720 px: the HD minimum): a 1080p and a
  720p encode of the same shot score alike, and an SD picture upscaled to HD scores as blurry as it looks at
  HD. The score also grows with contrast: a sharp but misty or dark shot scores low, so the threshold is set
  to catch clearly blurred clips only.
* ``blockiness``: the 8x8 block-boundary ratio, a simplified GBIM (Wu and Yuen, "A generalized block-edge
  impairment metric for video coding", IEEE Signal Processing Letters 4(11), 1997) without its luminance
  masking weights: along each axis, the mean absolute luma step between neighbouring pixels is taken per
  phase modulo 8 (which of the 8 pixel pairs of a block period it is); the axis's ratio is the largest
  phase's mean over the median of the 8 phases. Block coding leaves a step at one phase (the block boundary)
  and flattens the others, so the ratio rises above 1; natural pictures and well-coded video sit near 1. The
  largest phase is taken, not phase 0, so a grid shifted by a crop still counts. Steps larger than
  ``EDGE_STEP`` (30 of 255) are left out of every phase's mean: they are content edges, not the small steps
  between flattened blocks (GBIM weighs such edges down by local activity for the same reason). Synthetic
  graphics drawn on an 8-px grid still fool it: ffmpeg's ``testsrc2`` scores 1.4 (2.7 without the cut-off),
  ``testsrc`` 2.1 (15), as blocky as an MPEG-2 encode at ``-q:v 31``. The clip's score is the mean of the
  horizontal and vertical ratios. It is measured on the frames at their NATIVE size, since the block grid is
  in coded pixels: a clip that was scaled after its lossy coding (``extract.short_side``, or an anamorphic
  clip whose sampler output is stretched to its display aspect) keeps its artefacts but not their grid, and
  scores near 1.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from curation.config import SharpnessFilterConfig
from curation.frames import FrameSample

#: Rec. 601 luma weights of R, G, B (as the quality filter).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

#: The block period of the coding grid, in coded pixels (8x8 DCT of MPEG-1/2/4, JPEG, H.264 High).
BLOCK = 8

#: Luma steps (0-255) larger than this are content edges, not coding-block edges, and are left out of blockiness.
EDGE_STEP = 30.0


def luma(frame: np.ndarray) -> np.ndarray:
    """The Rec. 601 luma (float32, 0-255) of an RGB uint8 frame."""
    return frame.astype(np.float32) @ LUMA


def frame_sharpness(y: np.ndarray, short_side: int) -> float:
    """Variance of the 4-neighbour Laplacian of a luma plane resized to ``short_side`` (see the module docstring)."""
    height, width = y.shape
    scale = short_side / min(height, width)
    if scale != 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        y = cv2.resize(y, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return float(cv2.Laplacian(y, cv2.CV_32F, ksize=1).var())


def axis_blockiness(y: np.ndarray, axis: int) -> float:
    """Largest over median of the mean absolute luma step per phase modulo ``BLOCK`` along ``axis``.

    Steps above ``EDGE_STEP`` are left out of every phase's mean (content edges, see the module docstring).
    """
    steps = np.abs(np.diff(y, axis=axis))
    length = steps.shape[axis] // BLOCK * BLOCK
    if length < BLOCK:
        return 1.0
    steps = steps[:, :length] if axis == 1 else steps[:length]
    small = steps <= EDGE_STEP
    sums = np.where(small, steps, 0).sum(axis=1 - axis).reshape(-1, BLOCK).sum(axis=0)
    counts = small.sum(axis=1 - axis).reshape(-1, BLOCK).sum(axis=0)
    phases = sums / np.maximum(counts, 1)
    median = float(np.median(phases))
    return float(phases.max() / median) if median > 1e-6 else 1.0


def frame_blockiness(y: np.ndarray) -> float:
    """Mean of the horizontal and vertical block-boundary ratios of a luma plane at its coded size."""
    return (axis_blockiness(y, 1) + axis_blockiness(y, 0)) / 2


def sharpness_scores(sample: FrameSample, cfg: SharpnessFilterConfig) -> dict[str, Any]:
    """The clip's median sharpness and blockiness over its sampled frames (native size), and their extremes."""
    lumas = [luma(frame) for frame in sample.frames]
    sharp = [frame_sharpness(y, cfg.short_side) for y in lumas]
    blocky = [frame_blockiness(y) for y in lumas]
    if not lumas:
        return {"sharpness": 0.0, "blockiness": 1.0, "sharpness_min": 0.0, "blockiness_max": 1.0}
    return {"sharpness": round(float(np.median(sharp)), 2), "blockiness": round(float(np.median(blocky)), 4),
            "sharpness_min": round(min(sharp), 2), "blockiness_max": round(max(blocky), 4)}
