"""Slow real footage is not static: limited animation and a slow shot keep a motion score above the threshold.

Both clips are real (``../shared/testvideos``, labelled by eye): ``rapidvideocr/2.mp4`` is 3 s of limited
animation (a character turns her head over a painted night, drawings held for frames at a time, then
jumps away), and frames 70-170 of ``issue-195-aspect-ratio.mp4`` a glass on crumpled foil with the camera
all but still. Averaged over the whole frame and taken at the median moment, both scored as stills.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.config import FilterConfig
from curation.filters.motion import flow_speeds, motion_scores
from curation.frames import FrameSample, sample_clip
from demo.sample_videos import run_ffmpeg


def sample(path: Path) -> FrameSample:
    cfg = FilterConfig()
    return sample_clip(str(path), cfg.frames, {"small": cfg.motion.width}, gap_s=cfg.motion.gap_s)["small"]


def whole_frame_median(s: FrameSample) -> float:
    """The score as it was before: each pair's mean speed over the whole frame, the median pair."""
    return float(np.median([flow_speeds(a, b).mean() / np.hypot(*a.shape[1::-1]) / (t1 - t0)
                            for a, t0, b, t1 in zip(s.frames, s.times, s.following, s.following_times)]))


@pytest.fixture(scope="module")
def glass(shared_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("motion") / "glass.mp4"
    run_ffmpeg(["-i", str(shared_videos / "pyscenedetect/issue-195-aspect-ratio.mp4"), "-vf",
                "select='between(n\\,70\\,169)',setpts=N/FRAME_RATE/TB", "-an", "-c:v", "libx264", "-crf", "20",
                "-pix_fmt", "yuv420p", str(out)])
    return out


def test_limited_animation_is_not_static(shared_videos: Path) -> None:
    s = sample(shared_videos / "rapidvideocr/2.mp4")
    threshold = FilterConfig().motion.min_motion
    assert whole_frame_median(s) < threshold / 4, "the premise: the whole-frame median calls it a still"
    assert motion_scores(s)["motion"] > 2 * threshold


def test_slow_real_shot_is_not_static(glass: Path) -> None:
    s = sample(glass)
    threshold = FilterConfig().motion.min_motion
    assert whole_frame_median(s) < threshold, "the premise: the whole-frame median calls it a still"
    assert motion_scores(s)["motion"] > 1.5 * threshold


def test_whole_frame_mean_and_max_are_kept_beside_the_score(shared_videos: Path) -> None:
    scores = motion_scores(sample(shared_videos / "rapidvideocr/2.mp4"))
    assert scores["pairs"] == 9
    # the jump at the end moves much of the frame for a moment: the max is far above the mean
    assert scores["motion_max"] > 5 * scores["motion_mean"] > 0
