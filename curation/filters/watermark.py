"""Watermarks and logos: a region whose look stays fixed while the picture under and around it changes.

Logos, channel bugs, burned-in timestamps and credit lines are drawn on top of the video, so their
pixels stay the same in every frame while the scene changes. Two kinds of evidence, both from the
clip's one shared frame sample:

- pixels: Canny edges of small grey frames; a pixel whose edge is there in at least ``persistence``
  of the frames is persistent. Persistent pixels are joined into regions; a region is a candidate
  when it is small (an overlay, not the set), sits in the border zone of the frame (corners, top and
  bottom bands, side strips: where overlays go) and is not a line across the frame (a letterbox or
  a window edge). Its score is graded: the region's edge persistence times how much steadier its
  pixels are than the picture right around it, both measured against the clip's own temporal
  statistics (the mean absolute change of each pixel between sampled frames). In a moving shot the
  ring around a logo changes a lot and the logo not at all: near 1. Static scenery near the edge (a
  window sill, a couch) changes as little as its surroundings: near 0. In a still shot the picture
  still changes a little (noise, light, a leaf); a composited logo changes less than that, so the
  evidence is kept and graded rather than dropped. A picture whose typical pixel changes by less
  than ``min_context_change`` grey levels (graphics, a screen) is compared with its moving part only,
  and a picture where nothing changes gives no evidence; the result's note says which.
- text: tracks of the text filter (``curation.filters.text``) that it classed as overlay and that
  are present in at least ``persistence`` of the sampled frames: text logos, credits and timestamps
  (a subtitle that changes its words is overlay text, not a watermark). Their score is that share.

The score of a clip is that of its strongest region (0 when there is none), its box is reported as
``watermark_box``; the stage compares the score with ``WatermarkFilterConfig.max_score``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from curation.config import WatermarkFilterConfig
from curation.filters.text import iou

if TYPE_CHECKING:
    from curation.frames import FrameSample

Box = list[float]  # [x0, y0, x1, y1], normalised to 0..1

#: Width in pixels (at ``WatermarkFilterConfig.width``) of the ring around a region whose change is compared.
RING = 8
#: How far (pixels at ``WatermarkFilterConfig.width``) a region grows into the still pixels around its edges.
GROW = 4
#: A candidate pixel changes at most this share of the most-changing picture within ``RING`` pixels of it.
STEADIER = 0.5

def where(box: Box) -> str:
    """Where a box sits: a corner, a band (top, bottom), a side strip (left, right) or the centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    if row and (col == "" or box[2] - box[0] > 0.5):
        return f"{row} band"
    if row and col:
        return f"{row}-{col}"
    return col or "centre"


def _in_border(box: Box, border: float) -> bool:
    return box[3] <= border or box[1] >= 1 - border or box[2] <= border or box[0] >= 1 - border


def _grey_frames(frames: list[np.ndarray], width: int) -> np.ndarray:
    """The frames as one (T, H, W) uint8 stack of grey images ``width`` wide (narrower frames are kept)."""
    height, current = frames[0].shape[:2]
    width = min(width, current)
    size = (width, max(1, round(height * width / current)))
    return np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
                     for f in frames])


def pixel_regions(frames: list[np.ndarray], cfg: WatermarkFilterConfig) -> tuple[list[dict], str | None]:
    """Candidate overlay regions from persistent edges, each with its graded score; a note when the picture
    is frozen (no change to compare with)."""
    grey = _grey_frames(frames, cfg.width)
    edges = np.stack([cv2.Canny(g, 50, 150) for g in grey])
    persistence = np.mean(edges > 0, axis=0)
    persistent = persistence >= cfg.persistence
    # each pixel's mean absolute change between consecutive sampled frames, lightly smoothed against noise
    change = cv2.blur(np.mean(np.abs(np.diff(grey.astype(np.float32), axis=0)), axis=0), (3, 3))
    floor = float(np.median(change))  # how much the clip's typical pixel changes: its still parts' noise and light
    note = None
    if floor < cfg.min_context_change:
        # most of the picture is frozen (graphics, a screen, a frame held): only the moving part can show what
        # stays fixed over it; with nothing moving at all, nothing can
        note = (f"mostly frozen picture: the median pixel changes by {floor:.2f} grey levels between sampled "
                "frames; regions are compared with the moving picture near them only")
        floor = float("inf")
        if float(change.max()) < cfg.min_context_change:
            return [], "frozen picture: no pixel changes, so nothing tells a fixed overlay from the scene"
    # a persistent pixel is a candidate when it is steadier than both the picture near it and the clip's typical
    # pixel: static scenery beside passing cars is steadier than the cars, but not than the rest of the scenery
    nearby = cv2.dilate(cv2.blur(change, (5, 5)), np.ones((2 * RING + 1, 2 * RING + 1), np.uint8))
    still = change <= STEADIER * np.minimum(nearby, floor)
    steady = persistent & still
    joined = cv2.morphologyEx(steady.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 9), np.uint8))
    # a logo's flat parts (a badge's fill) have no edges but are as still: grow each region into the still
    # pixels touching it, up to GROW pixels away
    grown = cv2.dilate(joined, np.ones((2 * GROW + 1, 2 * GROW + 1), np.uint8)).astype(bool) & still
    joined = (joined.astype(bool) | grown).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined)
    height, width = persistent.shape
    regions = []
    for i in range(1, count):
        x, y, w, h = (int(v) for v in stats[i, :4])
        box = [x / width, y / height, (x + w) / width, (y + h) / height]
        if not cfg.min_region <= (w * h) / (width * height) <= cfg.max_region or not _in_border(box, cfg.border):
            continue
        if max(w / width, h / height) > cfg.max_extent:  # a line across the frame: letterbox, sill, horizon
            continue
        ring = np.zeros_like(persistent)
        ring[max(0, y - RING):y + h + RING, max(0, x - RING):x + w + RING] = True
        ring[y:y + h, x:x + w] = False
        if not ring.any():
            continue
        marks = (labels == i) & steady
        own, around = float(np.median(change[marks])), float(np.median(change[ring]))
        reference = min(around, floor)
        steadier = max(0.0, 1.0 - own / reference) if reference >= cfg.min_context_change else 0.0
        strength = float(persistence[marks].mean())
        regions.append({"box": [round(v, 4) for v in box], "score": round(strength * steadier, 4),
                        "change": round(own, 2), "context_change": round(around, 2)})
    return regions, note


def text_regions(tracks: list[dict], cfg: WatermarkFilterConfig) -> list[dict]:
    """Overlay text tracks present in at least ``persistence`` of the sampled frames, in the border zone, that
    keep their words (a subtitle cue changes them: overlay text, not a watermark)."""
    return [{"box": t["box"], "score": t["present"]} for t in tracks
            if t["kind"] == "overlay" and not t["cue"] and t["present"] >= cfg.persistence
            and _in_border(t["box"], cfg.border)]


def watermark_score(sample: FrameSample, text_tracks: list[dict] | None,
                    cfg: WatermarkFilterConfig) -> dict[str, Any]:
    """Score and box of the clip's strongest fixed overlay, its regions (box, where, kind, score) and a note."""
    if len(sample.frames) < cfg.min_frames:
        return {"watermark_score": 0.0, "watermark_box": None, "watermark_regions": [],
                "watermark_note": f"{len(sample.frames)} frames cannot show what persists"}
    pixels, note = pixel_regions(sample.frames, cfg)
    texts = text_regions(text_tracks or [], cfg)
    for region in pixels:
        region["kind"] = "text" if any(iou(region["box"], t["box"]) > 0 for t in texts) else "logo"
    # a text logo found both ways keeps the better-graded of the two
    texts = [t for t in texts if not any(iou(t["box"], p["box"]) > 0 and p["score"] >= t["score"] for p in pixels)]
    regions = [*(p for p in pixels if p["score"] > 0), *({**t, "kind": "text"} for t in texts)]
    for region in regions:
        region["where"] = where(region["box"])
    regions.sort(key=lambda r: -r["score"])
    result: dict[str, Any] = {
        "watermark_score": regions[0]["score"] if regions else 0.0,
        "watermark_box": regions[0]["box"] if regions else None,
        "watermark_regions": regions[:8],
    }
    if note:
        result["watermark_note"] = note
    return result
