"""A perceptual video hash: one 64-bit DCT pHash per sampled frame, and when two clips' hashes match.

Computed from the small frames the filter sampler already decodes (``filter.motion.width``, 160 px), so it
costs no decoding of its own. Per frame, on its Rec. 601 luma:

1. **borders off**: rows and columns of one flat colour are trimmed from each side (letterbox and
   pillarbox bars, pads of any colour), so a padded copy hashes the picture inside its bars;
2. **pHash** (Zauner, "Implementation and benchmarking of perceptual image hash functions", 2010; the
   ``imagehash.phash`` recipe): the trimmed luma resized to 32x32 (area averaging), its 2-D DCT, and the
   8x8 lowest frequencies, each a bit set when above their median. Resizing to a fixed square makes the
   hash blind to the frame's size and aspect, so resizes, re-encodes and mild crops keep most bits.

A frame of one flat colour (black, a fade, a title card's blank) says nothing about the clip and would
match every other such frame, so it has no hash. A clip's hash is its frames' hashes in time order; the
sampler spaces frames evenly over the clip's duration, so a copy played faster or slower is sampled at the
same moments of its content. Two clips are near-duplicates when, aligned in order (a longest common
subsequence, so a frame missing or shifted at one end does not break the rest), at least ``min_matched``
of the shorter clip's hashes lie within ``max_distance`` bits of the other's (``near_duplicates``).

The embedding mode (``filter.near_duplicates.mode: embedding``) finds duplicates by meaning as well as by
picture: each frame's hash is a SimHash of its CLIP image embedding (local weights) instead of its pHash,
and everything after (the rule, the grouping) is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from curation.config import NearDuplicateConfig
from curation.filters.sharpness import luma
from curation.frames import FrameSample

#: The side the luma is resized to before the DCT, and the side of the low-frequency block kept (64 bits).
DCT_SIDE, HASH_SIDE = 32, 8

#: A row or column whose luma standard deviation is at most this (0-255) is flat: part of a bar when at a side.
FLAT_STD = 4.0

#: Borders are not trimmed past this share of a side (a mostly flat picture keeps its size).
MAX_TRIM = 0.4

#: The fixed seed of the embedding mode's hyperplanes: every run and every worker hashes alike.
SIMHASH_SEED = 20_261_202


def trim_borders(y: np.ndarray) -> np.ndarray:
    """``y`` without the flat rows and columns at its sides (bars, pads), unless that would take most of it."""
    rows, cols = y.std(axis=1) <= FLAT_STD, y.std(axis=0) <= FLAT_STD
    top, bottom = _flat_run(rows), _flat_run(rows[::-1])
    left, right = _flat_run(cols), _flat_run(cols[::-1])
    height, width = y.shape
    if top + bottom > MAX_TRIM * height * 2 or left + right > MAX_TRIM * width * 2:
        return y
    return y[top:height - bottom, left:width - right]


def _flat_run(flat: np.ndarray) -> int:
    """How many leading entries of ``flat`` are true."""
    return len(flat) if flat.all() else int(np.argmin(flat))


def frame_hash(frame: np.ndarray) -> int | None:
    """The 64-bit pHash of an RGB frame (inside its borders), or None for a frame of one flat colour."""
    y = luma(frame)
    if float(y.std()) <= FLAT_STD:
        return None
    small = cv2.resize(trim_borders(y), (DCT_SIDE, DCT_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:HASH_SIDE, :HASH_SIDE]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def phash_scores(sample: FrameSample) -> dict[str, Any]:
    """The clip's perceptual hash: each informative sampled frame's pHash as 16 hex digits, in time order."""
    hashes = [h for h in (frame_hash(frame) for frame in sample.frames) if h is not None]
    return {"hashes": [f"{h:016x}" for h in hashes], "flat_frames": len(sample.frames) - len(hashes)}


def embedding_hashes(embeddings: np.ndarray) -> list[int]:
    """One 64-bit SimHash per unit-length embedding (Charikar 2002): the signs of its projections on 64 fixed
    random hyperplanes. Two embeddings at angle θ differ in each bit with probability θ/π, so the Hamming
    distance estimates the cosine (cos 0.95 ≈ 6.5 bits, cos 0.9 ≈ 9.2): the pHash's grouping applies as it is."""
    planes = np.random.default_rng(SIMHASH_SEED).standard_normal((64, embeddings.shape[1]))
    bits = (np.asarray(embeddings, dtype=np.float64) @ planes.T) > 0
    return [int(x) for x in np.packbits(bits, axis=1).view(">u8")[:, 0]]


def embedding_scores(sample: FrameSample, clip: Any) -> dict[str, Any]:
    """``phash_scores`` of the embedding mode: a SimHash of each informative frame's CLIP embedding (``clip``:
    a ``curation.filters.aesthetic.ClipEmbedder``), flat frames left out as in the pHash."""
    frames = [frame for frame in sample.frames if float(luma(frame).std()) > FLAT_STD]
    hashes = embedding_hashes(clip.embed(frames).float().cpu().numpy()) if frames else []
    return {"hashes": [f"{h:016x}" for h in hashes], "flat_frames": len(sample.frames) - len(frames)}


def parse_hashes(hexes: Sequence[str]) -> list[int]:
    """The frame hashes of a clip's ``phash.hashes`` record, as integers."""
    return [int(h, 16) for h in hexes]


def matched_frames(a: Sequence[int], b: Sequence[int], max_distance: int) -> int:
    """How many frames of ``a`` and ``b`` align in order within ``max_distance`` bits (longest common subsequence)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, z in enumerate(b):
            match = previous[j] + 1 if (x ^ z).bit_count() <= max_distance else 0
            current.append(max(match, previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def needed_matches(a: Sequence[int], b: Sequence[int], min_matched: float) -> int:
    """Aligned matching frames that make ``a`` and ``b`` near-duplicates: ``min_matched`` of the shorter, at least 1."""
    return max(1, math.ceil(min_matched * min(len(a), len(b)) - 1e-9))


def near_duplicates(a: Sequence[int], b: Sequence[int], cfg: NearDuplicateConfig) -> bool:
    """Whether two clips' frame hashes make them near-duplicates (neither may be empty)."""
    if not a or not b:
        return False
    return matched_frames(a, b, cfg.max_distance) >= needed_matches(a, b, cfg.min_matched)
