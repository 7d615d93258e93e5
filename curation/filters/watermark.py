"""Watermarks and overlays: what stays fixed on screen while the picture under it changes.

Logos, channel bugs, burned-in timestamps, credits and subtitle bands are drawn on top of the video,
so their edges sit on the same pixels in every frame while the scene moves. Two kinds of evidence,
both from the clip's one shared frame sample:

- pixels: Canny edges of small grey frames; a pixel whose edge is there in at least ``persistence``
  of the frames is persistent. Persistent pixels are joined into regions; a region counts when it is
  small (an overlay, not the set), sits in the border zone of the frame (corners, top and bottom
  bands, side strips: where overlays go, unlike scene text in the middle of the picture) and the
  picture around it changes (its edges there do not persist). In a static shot the whole set has
  persistent edges and nothing tells a logo from a wall, so when persistent edges cover more than
  ``static_share`` of the frame the pixel evidence is not used (a still clip is never one big
  watermark) and the result says so.
- text: boxes of the text detector (``curation.filters.text``) found at the same place in most of
  the frames it looked at. Scene text moves or goes with the shot; overlay text stays put.

The score of a clip is the persistence of its strongest overlay region (0 when there is none); the
stage compares it with ``WatermarkFilterConfig.max_score``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from curation.config import WatermarkFilterConfig

if TYPE_CHECKING:
    from curation.frames import FrameSample

Box = list[float]  # [x0, y0, x1, y1], normalised to 0..1

#: Width in pixels (at ``WatermarkFilterConfig.width``) of the ring around a region that must keep changing.
RING = 8


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


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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
    """Overlay regions found from persistent edges, and a note when the clip gives no pixel evidence.

    A region counts only when its surroundings change: few pixels of the ring around it have an edge
    within a pixel in most frames. Static scenery (a rock in a still shot) is surrounded by more
    static scenery; an overlay by the moving picture.
    """
    grey = _grey_frames(frames, cfg.width)
    edges = np.stack([cv2.Canny(g, 50, 150) for g in grey])
    persistence = np.mean(edges > 0, axis=0)
    persistent = persistence >= cfg.persistence
    if persistent.mean() > cfg.static_share:
        return [], (f"static shot: persistent edges cover {persistent.mean():.1%} of the frame, "
                    "so fixed overlays cannot be told from the scene")
    near = np.ones((3, 3), np.uint8)
    settled = np.mean([cv2.dilate(e, near) > 0 for e in edges], axis=0) >= cfg.persistence
    joined = cv2.morphologyEx(persistent.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 9), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined)
    height, width = persistent.shape
    regions = []
    for i in range(1, count):
        x, y, w, h = (int(v) for v in stats[i, :4])
        box = [x / width, y / height, (x + w) / width, (y + h) / height]
        if not cfg.min_region <= (w * h) / (width * height) <= cfg.max_region or not _in_border(box, cfg.border):
            continue
        ring = np.zeros_like(persistent)
        ring[max(0, y - RING):y + h + RING, max(0, x - RING):x + w + RING] = True
        ring[y:y + h, x:x + w] = False
        if not ring.any() or settled[ring].mean() > cfg.max_context_persistence:
            continue
        strength = float(persistence[(labels == i) & persistent].mean())
        regions.append({"box": [round(v, 4) for v in box], "score": round(strength, 4)})
    return regions, None


def text_regions(text_boxes: list[list[Box]], cfg: WatermarkFilterConfig) -> list[dict]:
    """Text boxes that sit at the same place in at least ``persistence`` of the frames looked at.

    A box counts as present in another frame when a box there overlaps it (IoU at least 0.3), so a
    subtitle line that changes its words but not its place still counts as fixed.
    """
    frames = len(text_boxes)
    if frames < 2:
        return []
    regions: list[dict] = []
    for boxes in text_boxes:
        for box in boxes:
            matches = [max((iou(box, other) for other in others), default=0.0) >= 0.3 for others in text_boxes]
            share = sum(matches) / frames
            if share < cfg.persistence or not _in_border(box, cfg.border):
                continue
            if any(iou(box, r["box"]) >= 0.3 for r in regions):
                continue
            regions.append({"box": [round(v, 4) for v in box], "score": round(share, 4)})
    return regions


def watermark_score(sample: FrameSample, text_boxes: list[list[Box]] | None,
                    cfg: WatermarkFilterConfig) -> dict[str, Any]:
    """Score of the clip's strongest fixed overlay, its regions (box, where, kind, score) and a note."""
    if len(sample.frames) < cfg.min_frames:
        return {"watermark_score": 0.0, "watermark_regions": [],
                "watermark_note": f"{len(sample.frames)} frames cannot show what persists"}
    pixels, note = pixel_regions(sample.frames, cfg)
    texts = text_regions(text_boxes or [], cfg)
    for region in pixels:
        region["kind"] = "text" if any(iou(region["box"], t["box"]) > 0 for t in texts) else "logo"
    texts = [t for t in texts if not any(iou(t["box"], p["box"]) > 0 for p in pixels)]
    regions = [*pixels, *({**t, "kind": "text"} for t in texts)]
    for region in regions:
        region["where"] = where(region["box"])
    result: dict[str, Any] = {
        "watermark_score": max((r["score"] for r in regions), default=0.0),
        "watermark_regions": sorted(regions, key=lambda r: -r["score"]),
    }
    if note:
        result["watermark_note"] = note
    return result
