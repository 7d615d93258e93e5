"""Motion: optical-flow magnitude (OpenCV Farneback) on small grey frames, to drop static clips and slideshows.

Flow is measured between each sampled frame and the frame a short gap after it (``motion.gap_s``),
not between consecutive samples: samples of a 10 s clip are a second or more apart, and a
slideshow or a cut changes the whole picture between them, which Farneback reports as large
(meaningless) flow. Within a tenth of a second, a still or a slide does not move at all while real
footage does. The clip's score is the MEDIAN over the sample points, so one pair that straddles a
slide change or a flash does not make a slideshow "move".

The magnitude is normalised by the frame diagonal and by the time between the two frames: the score
is in frame diagonals per second, the same for any resolution and frame rate.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from curation.frames import FrameSample


def flow_magnitude(first: np.ndarray, second: np.ndarray) -> float:
    """Mean Farneback flow magnitude between two RGB frames, in pixels of their size."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (first, second)]
    # OpenCV's documented example parameters: 3-level pyramid halving each level, 15 px window.
    flow = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return float(np.linalg.norm(flow, axis=2).mean())


def motion_scores(sample: FrameSample) -> dict[str, Any]:
    """Median, mean and max motion of the clip over its flow pairs, in frame diagonals per second."""
    pairs = zip(sample.frames, sample.times, sample.following, sample.following_times, strict=False)
    speeds = []
    for first, t0, second, t1 in pairs:
        height, width = first.shape[:2]
        if t1 > t0:
            speeds.append(flow_magnitude(first, second) / np.hypot(width, height) / (t1 - t0))
    if not speeds:
        return {"motion": 0.0, "motion_mean": 0.0, "motion_max": 0.0, "pairs": 0}
    return {"motion": round(float(np.median(speeds)), 5), "motion_mean": round(float(np.mean(speeds)), 5),
            "motion_max": round(float(np.max(speeds)), 5), "pairs": len(speeds)}
