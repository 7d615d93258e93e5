"""Watermarks and logos: a region whose look stays fixed while the picture under and around it changes.

Logos, channel bugs, burned-in timestamps and credit lines are drawn on top of the video, so their
pixels stay the same in every frame while the scene changes. Two kinds of evidence, both from the
clip's one shared frame sample:

- pixels: Canny edges of small grey frames; a pixel whose edge is there in at least ``persistence``
  of the frames is persistent, and steady when it changes at most half as much as the most-changing
  picture near it (the mean absolute change of each pixel between sampled frames: the clip's own
  temporal statistics). That is the definition of an overlay, and it holds in a still shot too: the
  picture there changes where something passes or the light moves, and the overlay over it does not.
  Steady pixels are joined into regions; a region is a candidate when it is shaped and placed as an
  overlay: small, in the border zone (corners, bands, side strips), not a line across the picture,
  and not cut by the picture's edge (scenery such as a sill, a couch or a pole at the frame edge goes
  on outside the frame; an overlay is placed inside it). The picture is the frame without its
  letterbox or pillarbox bars (black in every frame): a bar's edge is as fixed as a logo's.
- text: tracks of the text filter (``curation.filters.text``) present in at least ``persistence`` of
  the sampled frames, in the border zone, that keep their words (a subtitle that changes them is
  overlay text, not a watermark). An overlay track scores that share. A track the text filter left as
  scene text (in a slow shot it cannot tell a credit line from a sign) is graded like a pixel region,
  on the steady pixels of its box. A text mark found both ways is one region, boxed around both.

A region's score is graded, so that a threshold can be read off its histogram: the persistence of its
edges x how much less it changes than the ring of picture around it (0 when the ring does not change:
nothing then tells an overlay from the scene) x whether its edges run in several directions (a straight
edge sliding along itself in a pan stays put, as do a railing's bars; letters and marks do not) x how
dense its edges are (a mark is compact; a piece of scenery cut out by what moves near it is sparse). A
picture where nothing changes gives no evidence; the result's note says so, and when bars were left out.

The score of a clip is that of its strongest region (0 when there is none), its box is reported as
``watermark_box``; the stage compares the score with ``WatermarkFilterConfig.max_score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from curation.config import WatermarkFilterConfig
from curation.filters.text import iou, stroke_dominance

if TYPE_CHECKING:
    from curation.frames import FrameSample

Box = list[float]  # [x0, y0, x1, y1], normalised to 0..1

#: Width in pixels (at ``WatermarkFilterConfig.width``) of the ring around a region whose change is compared.
RING = 8
#: How far (pixels at ``WatermarkFilterConfig.width``) a region grows into the still pixels around its edges.
GROW = 4
#: A candidate pixel changes at most this share of the most-changing picture within ``RING`` pixels of it.
STEADIER = 0.5
#: Brightest grey level (0-255) of a letterbox bar's rows or columns, in every sampled frame.
BAR_LEVEL = 24
#: Pixels (at ``WatermarkFilterConfig.width``) beside a bar left out too: the encoder blurs the bar's edge.
BAR_EDGE = 2
#: Share of a region's edge energy in one direction up to which it counts as running in several (a rectangle: 0.5).
TWO_DIRECTIONS = 0.5
#: Share of a region's pixels on a fixed edge at which it counts as dense as a mark. On the annotated clips letters
#: and logos have 0.15-0.25, pieces of scenery cut out by what moves near them 0.01-0.12.
EDGE_DENSITY = 0.15


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


def union(a: Box, b: Box) -> Box:
    """The box around two boxes."""
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def _in_border(box: Box, border: float) -> bool:
    return box[3] <= border or box[1] >= 1 - border or box[2] <= border or box[0] >= 1 - border


def _grey_frames(frames: list[np.ndarray], width: int) -> np.ndarray:
    """The frames as one (T, H, W) uint8 stack of grey images ``width`` wide (narrower frames are kept)."""
    height, current = frames[0].shape[:2]
    width = min(width, current)
    size = (width, max(1, round(height * width / current)))
    return np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
                     for f in frames])


def _bar(levels: np.ndarray, limit: int) -> int:
    """How many of the leading entries of ``levels`` (the brightest grey of a row or column, over every frame)
    are black: a letterbox or pillarbox bar, up to ``limit`` of them."""
    dark = levels[:limit] <= BAR_LEVEL
    return limit if dark.all() else int(np.argmin(dark))


def picture_area(grey: np.ndarray) -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) pixels of the picture inside letterbox and pillarbox bars: the outer rows and columns
    black in every sampled frame, and ``BAR_EDGE`` pixels beside them (the encoder blurs a bar's edge).

    A bar's edge is as fixed as a logo's and the picture stops there: both belong to the frame, not to an overlay,
    and scenery cut by the picture's edge is cut there. A bar covers at most a third of the frame."""
    _, height, width = grey.shape
    rows, cols = grey.max(axis=(0, 2)), grey.max(axis=(0, 1))
    top, bottom = _bar(rows, height // 3), _bar(rows[::-1], height // 3)
    left, right = _bar(cols, width // 3), _bar(cols[::-1], width // 3)
    top, bottom, left, right = (n + BAR_EDGE if n else 0 for n in (top, bottom, left, right))
    return left, top, width - right, height - bottom


@dataclass
class Evidence:
    """What the sample says about each pixel of the picture (bars left out), at ``WatermarkFilterConfig.width``."""

    area: tuple[int, int, int, int]  # (x0, y0, x1, y1): the picture's pixels in the frame
    size: tuple[int, int]  # (width, height) of the frame
    persistence: np.ndarray  # share of the sampled frames with an edge at the pixel
    change: np.ndarray  # mean absolute grey change between consecutive sampled frames, lightly smoothed
    still: np.ndarray  # changes at most STEADIER as much as the most-changing picture within RING pixels
    steady: np.ndarray  # still, on an edge persistent in the sample
    typical: np.ndarray  # the median frame: what stays, without what passes

    def normalised(self, x: int, y: int, w: int, h: int) -> Box:
        """A rectangle of picture pixels as a box in shares of the whole frame."""
        (x0, y0, _, _), (width, height) = self.area, self.size
        return [round((x0 + x) / width, 4), round((y0 + y) / height, 4), round((x0 + x + w) / width, 4),
                round((y0 + y + h) / height, 4)]

    def rectangle(self, box: Box) -> tuple[int, int, int, int]:
        """A box in shares of the whole frame as (x, y, w, h) picture pixels, clipped to the picture."""
        (x0, y0, x1, y1), (width, height) = self.area, self.size
        left, top = max(x0, int(box[0] * width)), max(y0, int(box[1] * height))
        right, bottom = min(x1, int(np.ceil(box[2] * width))), min(y1, int(np.ceil(box[3] * height)))
        return left - x0, top - y0, max(0, right - left), max(0, bottom - top)

    def grade(self, marks: np.ndarray, rect: tuple[int, int, int, int], cfg: WatermarkFilterConfig) -> dict:
        """The graded score of a region (its fixed edge pixels ``marks`` within the rectangle ``rect``), and why.

        persistence (how often its edges are there) x steadiness (how much less it changes than the picture
        in a ring around it, 0 when that ring does not change) x directions (1 when its edges run in at least
        two directions, falling to 0 as they all run in one: a straight edge sliding along itself in a pan
        stays where it was, and bars of a railing are one direction; letters and marks are not) x compactness
        (the share of its pixels on a fixed edge, up to EDGE_DENSITY: a mark is dense with edges, a piece of
        scenery cut out by what moves near it is sparse)."""
        x, y, w, h = rect
        ring = np.zeros_like(marks)
        ring[max(0, y - RING):y + h + RING, max(0, x - RING):x + w + RING] = True
        ring[y:y + h, x:x + w] = False
        if not marks.any() or not ring.any():
            return {"box": self.normalised(*rect), "score": 0.0}
        own, around = float(np.median(self.change[marks])), float(np.median(self.change[ring]))
        steadier = max(0.0, 1.0 - own / around) if around >= cfg.min_context_change else 0.0
        dominance = stroke_dominance(self.typical[y:y + h, x:x + w])
        directions = min(1.0, (1.0 - dominance) / (1.0 - TWO_DIRECTIONS))
        density = float((self.persistence[y:y + h, x:x + w] >= cfg.persistence).mean())
        compact = min(1.0, density / EDGE_DENSITY)
        score = float(self.persistence[marks].mean()) * steadier * directions * compact
        return {"box": self.normalised(*rect), "score": round(score, 4), "change": round(own, 2),
                "context_change": round(around, 2), "dominance": round(dominance, 2), "density": round(density, 3)}


def evidence(frames: list[np.ndarray], cfg: WatermarkFilterConfig) -> tuple[Evidence | None, str | None]:
    """The sample's evidence inside the picture, or None (with why) when the picture is too small or frozen;
    a note when bars were left out."""
    full = _grey_frames(frames, cfg.width)
    x0, y0, x1, y1 = picture_area(full)
    grey = full[:, y0:y1, x0:x1]
    note = None
    if (x0, y0, x1, y1) != (0, 0, full.shape[2], full.shape[1]):
        note = (f"letterbox or pillarbox bars left out: the picture is pixels {x0}-{x1} x {y0}-{y1} of "
                f"{full.shape[2]} x {full.shape[1]}")
    if grey.shape[1] < 2 * RING or grey.shape[2] < 2 * RING:
        return None, note
    persistence = np.mean([cv2.Canny(g, 50, 150) > 0 for g in grey], axis=0)
    change = cv2.blur(np.mean(np.abs(np.diff(grey.astype(np.float32), axis=0)), axis=0), (3, 3))
    if float(change.max()) < cfg.min_context_change:
        return None, "frozen picture: no pixel changes, so nothing tells a fixed overlay from the scene"
    # a persistent edge pixel is steady when it changes much less than the most-changing picture near it: what is
    # under and around an overlay changes (in a still shot too, where something passes it), the overlay does not
    nearby = cv2.dilate(cv2.blur(change, (5, 5)), np.ones((2 * RING + 1, 2 * RING + 1), np.uint8))
    still = change <= STEADIER * nearby
    return Evidence((x0, y0, x1, y1), (full.shape[2], full.shape[1]), persistence, change, still,
                    still & (persistence >= cfg.persistence), np.median(grey, axis=0).astype(np.uint8)), note


def pixel_regions(ev: Evidence, cfg: WatermarkFilterConfig) -> list[dict]:
    """Candidate overlay regions: steady edge pixels joined into small regions of the border zone, each graded.

    Left out: regions too small or too large for an overlay, outside the border zone, lines across the frame,
    and scenery cut by the picture's edge (it goes on outside; an overlay is placed inside the picture)."""
    joined = cv2.morphologyEx(ev.steady.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 9), np.uint8))
    # a logo's flat parts (a badge's fill) have no edges but are as still: grow each region into the still
    # pixels touching it, up to GROW pixels away
    grown = cv2.dilate(joined, np.ones((2 * GROW + 1, 2 * GROW + 1), np.uint8)).astype(bool) & ev.still
    count, labels, stats, _ = cv2.connectedComponentsWithStats((joined.astype(bool) | grown).astype(np.uint8))
    regions = []
    for i in range(1, count):
        rect = tuple(int(v) for v in stats[i, :4])
        marks = (labels == i) & ev.steady
        if _placed_like_an_overlay(marks, rect, cfg):
            region = ev.grade(marks, rect, cfg)
            if region["score"] > 0:
                regions.append({**region, "kind": "logo"})
    return regions


def _placed_like_an_overlay(marks: np.ndarray, rect: tuple[int, int, int, int], cfg: WatermarkFilterConfig) -> bool:
    """Whether a region (its fixed edge pixels ``marks``, within ``rect`` of the picture) is shaped and placed as an
    overlay: its size between ``min_region`` and ``max_region``, in the border zone, not a line across the picture
    (a sill, a horizon: longer than ``max_extent``), and not cut by the picture's edge (scenery goes on outside it;
    an overlay is placed inside the picture)."""
    height, width = marks.shape
    x, y, w, h = rect
    box = [x / width, y / height, (x + w) / width, (y + h) / height]
    return (cfg.min_region <= (w * h) / (width * height) <= cfg.max_region and _in_border(box, cfg.border)
            and max(w / width, h / height) <= cfg.max_extent
            and not (marks[0].any() or marks[-1].any() or marks[:, 0].any() or marks[:, -1].any()))


def text_regions(tracks: list[dict], ev: Evidence | None, cfg: WatermarkFilterConfig) -> list[dict]:
    """Text tracks present in at least ``persistence`` of the sampled frames, in the border zone, that keep their
    words (a subtitle cue changes them: overlay text, not a watermark).

    An overlay track scores its presence (the text filter saw it fixed over a moving picture). A track the text
    filter left as scene text is graded like a pixel region, on its box: in a nearly still shot its test cannot
    tell a credit line from a sign, but a credit stays fixed while what is under it changes, even slowly."""
    regions = []
    for track in tracks:
        if track["cue"] or track["present"] < cfg.persistence or not _in_border(track["box"], cfg.border):
            continue
        if track["kind"] == "overlay":
            regions.append({"box": track["box"], "score": track["present"], "kind": "text"})
        elif ev is not None:
            x, y, w, h = ev.rectangle(track["box"])
            marks = np.zeros_like(ev.steady)
            marks[y:y + h, x:x + w] = ev.steady[y:y + h, x:x + w]
            rect = cv2.boundingRect(marks.astype(np.uint8))  # the box of what stays fixed: the detector pads its boxes
            if not marks.any() or not _placed_like_an_overlay(marks, rect, cfg):
                continue
            region = ev.grade(marks, rect, cfg)
            if region["score"] > 0:
                regions.append({**region, "kind": "text"})
    return regions


def watermark_score(sample: FrameSample, text_tracks: list[dict] | None,
                    cfg: WatermarkFilterConfig) -> dict[str, Any]:
    """Score and box of the clip's strongest fixed overlay, its regions (box, where, kind, score) and a note."""
    if len(sample.frames) < cfg.min_frames:
        return {"watermark_score": 0.0, "watermark_box": None, "watermark_regions": [],
                "watermark_note": f"{len(sample.frames)} frames cannot show what persists"}
    ev, note = evidence(sample.frames, cfg)
    pixels = pixel_regions(ev, cfg) if ev is not None else []
    texts = text_regions(text_tracks or [], ev, cfg)
    # a text mark found both ways is one region: the detector boxes its letters, the pixels the part that stays
    # (a badge around the letters, or only some of them), so it keeps the better score and the box around both
    for text in texts:
        for region in (p for p in pixels if p["score"] > 0 and iou(text["box"], p["box"]) > 0):
            text["box"] = [round(v, 4) for v in union(text["box"], region["box"])]
            text["score"] = max(text["score"], region["score"])
            region["score"] = 0.0
    regions = [r for r in (*pixels, *texts) if r["score"] > 0]
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
