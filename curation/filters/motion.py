"""Motion: optical-flow speed (OpenCV Farneback) on small grey frames, to drop static clips and slideshows.

Flow is measured between each sampled frame and the frame a short gap after it (``motion.gap_s``),
not between consecutive samples: samples of a 10 s clip are a second or more apart, and a
slideshow or a cut changes the whole picture between them, which Farneback reports as large
(meaningless) flow. Within a tenth of a second, a still or a slide does not move at all while real
footage does.

Slow footage is not a slideshow, but it moves in a part of the frame only, and not at every moment: a
face that talks over a still background, a character of limited animation (drawings held for two or
three frames) who turns her head while the rest of the picture is painted. Averaged over the whole
frame and then taken at the median moment, such clips scored like stills (an anime clip 0.00025, a
slow product shot 0.00085, against 0.002). So each pair is scored by how fast the moving part moves,
the 95th percentile of its pixels' speeds, and the clip by its busier moments, the upper quartile over
its pairs: on ``benchmarks/eval_motion.py``'s real clips the slowest real footage then scores 0.0033
and up, stills and slideshows 0.0008 and below, either side of the 0.002 threshold. One pair that
straddles a slide change, or a flash, still does not make a slideshow "move" (it is one pair of nine).

Speeds are normalised by the frame diagonal and by the time between the two frames: the score is in
frame diagonals per second, the same for any resolution and frame rate. ``motion_mean`` and
``motion_max`` are the whole-frame mean speed over the pairs, averaged and at its largest.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from curation.frames import FrameSample

#: Percentile of a pair's pixel speeds that scores it: the moving part, if a twentieth of the frame moves.
PIXEL_PERCENTILE = 95
#: Percentile over a clip's pairs that scores the clip: its busier moments, yet not one odd pair.
PAIR_PERCENTILE = 75


def flow_speeds(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Farneback flow magnitude of every pixel between two RGB frames, in pixels of their size."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (first, second)]
    # OpenCV's documented example parameters: 3-level pyramid halving each level, 15 px window.
    flow = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return np.linalg.norm(flow, axis=2)


def motion_scores(sample: FrameSample) -> dict[str, Any]:
    """The clip's motion (see the module docstring), and its whole-frame mean and max, in frame diagonals per second."""
    pairs = zip(sample.frames, sample.times, sample.following, sample.following_times, strict=False)
    moving, whole = [], []
    for first, t0, second, t1 in pairs:
        height, width = first.shape[:2]
        if t1 > t0:
            speeds = flow_speeds(first, second) / np.hypot(width, height) / (t1 - t0)
            moving.append(float(np.percentile(speeds, PIXEL_PERCENTILE)))
            whole.append(float(speeds.mean()))
    if not moving:
        return {"motion": 0.0, "motion_mean": 0.0, "motion_max": 0.0, "pairs": 0}
    return {"motion": round(float(np.percentile(moving, PAIR_PERCENTILE)), 5),
            "motion_mean": round(float(np.mean(whole)), 5), "motion_max": round(float(np.max(whole)), 5),
            "pairs": len(moving)}
