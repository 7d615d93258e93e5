"""Basic quality: high definition, widescreen, not too long, not black or blank, decodable.

Resolution and aspect are judged on the SOURCE's display size from the probe (``display_width`` and
``display_height``: sample aspect ratio and rotation applied), not on the extracted clip's size:
the clip is cut from that picture and carries the same aspect, so the two agree unless the user
asked extraction to scale down (``extract.short_side``), a training-size choice that must not turn
an HD source into a rejection. It needs no decoding and depends on the source alone, so the screen
stage (``curation.stages.screen``) judges it right after the probe, before any split or cut; the
clip's duration is judged by the filter stage, also before decoding. Blank frames and broken decoding
are judged on the clip's decoded frames.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curation.config import QualityFilterConfig
from curation.frames import FrameSample

#: Rec. 601 luma weights of R, G, B.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def source_scores(row: dict[str, Any], cfg: QualityFilterConfig) -> dict[str, Any]:
    """Scores of the source's display size, from its probe columns (no decoding, nothing of the clip)."""
    width, height = int(row["display_width"]), int(row["display_height"])
    aspect = width / height
    return {
        "short_side": min(width, height),
        "display_aspect": round(aspect, 4),
        "aspect_deviation": round(abs(aspect / cfg.aspect - 1), 4),
    }


def clip_scores(row: dict[str, Any]) -> dict[str, Any]:
    """The clip's duration, from its span (no decoding)."""
    duration = row.get("clip_duration") or (float(row["end_time"]) - float(row["start_time"]))
    return {"duration": round(float(duration), 3)}


def geometry_scores(row: dict[str, Any], cfg: QualityFilterConfig) -> dict[str, Any]:
    """Scores of the source's display size and the clip's duration (no decoding needed)."""
    return {**source_scores(row, cfg), **clip_scores(row)}


def decode_scores(sample: FrameSample) -> dict[str, Any]:
    """How many of the frames asked for decoded: fewer means decoding stopped early (a broken clip)."""
    return {"frames_decoded": len(sample.frames), "frames_wanted": sample.wanted}


def frame_scores(sample: FrameSample, cfg: QualityFilterConfig) -> dict[str, Any]:
    """Scores of the decoded frames: the share that is black or blank, and the darkest and flattest frame."""
    lumas = [frame.astype(np.float32) @ LUMA for frame in sample.frames]
    means = [float(y.mean()) for y in lumas]
    stds = [float(y.std()) for y in lumas]
    blank = [m <= cfg.black_luma or s <= cfg.blank_std for m, s in zip(means, stds, strict=True)]
    return {
        "blank_share": round(sum(blank) / len(blank), 4) if blank else 1.0,
        "luma_mean_min": round(min(means, default=math.nan), 2),
        "luma_std_min": round(min(stds, default=math.nan), 2),
    }
