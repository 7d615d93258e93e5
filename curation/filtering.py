"""Judging one clip: decode it once, score it with every enabled filter, keep or reject it, record why.

The filters (``curation.filters``) only return scores; this module owns the thresholds. Each rule
below names a score, the config field holding its threshold, and the rejection reason. Every clip
gets a decision record in its ``scores`` column (index, shard json, and the stage's persisted row of
a rejected clip): a ``shards.scores.DecisionRecord``, with a check per applied rule named by the
rule's reason (``checks.low_resolution = {"score": 1080, "threshold": 720, "passed": true}``), the
reason that rejected the clip, and each filter's raw scores.

Rules run in groups, cheapest first: the source's resolution, aspect and the clip's duration (no
decoding; only an upper bound, as ``split.min_duration`` already dropped shorter scenes), then decoding
itself (a clip whose decoding stops early is broken, whichever filters are on), the decoded frames
(black or blank), motion, text, and watermarks (which use the text boxes).
Outside score-only mode a clip stops at the first group it fails, so text detection (the dominant
cost on a CPU) only runs on clips that passed everything else; a rejected clip's record holds the
scores computed until then. In score-only mode every group runs and nothing is rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from curation.config import FilterConfig
from curation.errors import Rejection
from curation.filters.motion import motion_scores
from curation.filters.quality import decode_scores, frame_scores, geometry_scores
from curation.filters.watermark import watermark_score
from curation.frames import FrameSample, sample_clip
from shards.schema import STATUS_REJECTED
from shards.scores import Check, DecisionRecord

if TYPE_CHECKING:
    from curation.filters.text import TextDetector

#: Thresholds are recorded rounded to this many decimals (16/9 would otherwise take 17 digits).
DECIMALS = 5


@dataclass(frozen=True)
class Rule:
    """A score of one filter against one configured threshold; failing it rejects the clip with ``reason``."""

    filter: str  # the filter whose scores hold ``score`` (and whose config holds ``limit``)
    score: str
    limit: str  # config field of the threshold (its value None disables the rule); "" for broken_decode
    bound: str  # "min": the score must be at least the threshold; "max": at most
    reason: str
    meaning: str  # what failing says, for the rejection's detail


RULES: dict[str, tuple[Rule, ...]] = {
    "geometry": (
        Rule("quality", "short_side", "min_short_side", "min", "low_resolution", "the source is not high-definition"),
        Rule("quality", "aspect_deviation", "aspect_tolerance", "max", "aspect_ratio",
             "the display aspect is too far from filter.quality.aspect"),
        Rule("quality", "duration", "max_duration", "max", "too_long", "the clip is too long"),
    ),
    "decode": (
        Rule("decode", "frames_decoded", "", "min", "broken_decode", "decoding stopped before the sampled frames"),
    ),
    "frames": (
        Rule("quality", "blank_share", "max_blank_share", "max", "black_frames",
             "too many sampled frames are black or one flat colour"),
    ),
    "motion": (
        Rule("motion", "motion", "min_motion", "min", "static", "the clip is static or a slideshow"),
        Rule("motion", "motion", "max_motion", "max", "shaky", "the clip moves too much (extreme shake)"),
    ),
    "text": (
        Rule("text", "text_area_max", "max_area", "max", "text_area", "burned-in text covers too much of a frame"),
    ),
    "watermark": (
        Rule("watermark", "watermark_score", "max_score", "max", "watermark",
             "a logo, caption band or other overlay stays fixed while the picture moves"),
    ),
}

#: A filter group's scores for one clip, from its row, its frame samples and the decision record so far.
Scorer = Callable[[dict[str, Any], dict[str, FrameSample], DecisionRecord], dict[str, Any]]


class ClipFilter:
    """Every enabled filter of ``cfg``, ready to judge clips; holds the text detector when text is on."""

    def __init__(self, cfg: FilterConfig, gpu: bool = False) -> None:
        self.cfg = cfg
        self.gpu = gpu
        self._detector: TextDetector | None = None

    @property
    def detector(self) -> TextDetector:
        """The text detector, loaded on first use (clips rejected earlier never need it)."""
        if self._detector is None:
            from curation.filters.text import TextDetector

            self._detector = TextDetector(self.cfg.text, gpu=self.gpu)
        return self._detector

    def widths(self) -> dict[str, int]:
        """The frame sizes to decode: small for quality and motion, the widest the text or watermark filter uses."""
        cfg = self.cfg
        widths = {"small": cfg.motion.width}
        detail = [cfg.text.gpu_width if self.gpu else cfg.text.width] if cfg.text.enabled else []
        detail += [cfg.watermark.width] if cfg.watermark.enabled else []
        if detail:
            widths["detail"] = max(detail)
        return widths

    def judge(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The clip's row with its decision record; rejected (with reason and detail) if it failed a rule."""
        cfg = self.cfg
        record = DecisionRecord(score_only=cfg.score_only)
        samples: dict[str, FrameSample] = {}
        failed: Rule | None = None
        for group, scorer in self._groups():
            if group != "geometry" and not samples:
                try:
                    samples = sample_clip(row["clip_path"], cfg.frames, self.widths(), gap_s=cfg.motion.gap_s,
                                          threads=cfg.threads)
                except Rejection as exc:
                    return [_rejected(row, record, "broken_decode", exc.detail)]
            scores = scorer(row, samples, record)
            record.add_scores(RULES[group][0].filter, scores)
            for rule in RULES[group]:
                check = check_rule(rule, scores, cfg)
                if check is not None:
                    record.checks[rule.reason] = check
                    if not check.passed and failed is None:
                        failed = rule
            if failed is not None and not cfg.score_only:
                break
        if failed is None or cfg.score_only:
            return [{**row, "scores": record.to_json()}]
        check = record.checks[failed.reason]
        relation = "<" if failed.bound == "min" else ">"
        where = f"filter.{failed.filter}.{failed.limit}" if failed.limit else "frames sampled"
        return [_rejected(row, record, failed.reason, f"{failed.filter}.{failed.score} {check.score} {relation} "
                                                      f"{check.threshold} ({where}): {failed.meaning}")]

    def _groups(self) -> list[tuple[str, Scorer]]:
        """The enabled groups, in the order they run."""
        cfg = self.cfg
        groups: list[tuple[str, Scorer]] = []
        if cfg.quality.enabled:
            groups.append(("geometry", lambda row, _, __: geometry_scores(row, cfg.quality)))
        if cfg.quality.enabled or cfg.motion.enabled or cfg.text.enabled or cfg.watermark.enabled:  # frames decoded
            groups.append(("decode", lambda _, s, __: decode_scores(s["small"])))
        if cfg.quality.enabled:
            groups.append(("frames", lambda _, s, __: frame_scores(s["small"], cfg.quality)))
        if cfg.motion.enabled:
            groups.append(("motion", lambda _, s, __: motion_scores(s["small"])))
        if cfg.text.enabled:
            groups.append(("text", lambda _, s, __: self.detector.score(s["detail"])))
        if cfg.watermark.enabled:  # after text: text boxes that stay put are evidence of overlays
            groups.append(("watermark", lambda _, s, record: watermark_score(
                s["detail"], record.scores.get("text", {}).get("text_boxes"), cfg.watermark)))
        return groups


def check_rule(rule: Rule, scores: dict[str, Any], cfg: FilterConfig) -> Check | None:
    """``rule`` applied to its filter's ``scores`` under ``cfg``, or None when its threshold is switched off."""
    if rule.limit:
        threshold = getattr(getattr(cfg, rule.filter), rule.limit)
    else:  # broken decode: every frame asked for must have been decoded
        threshold = scores["frames_wanted"]
    if threshold is None:
        return None
    score = scores[rule.score]
    passed = score >= threshold if rule.bound == "min" else score <= threshold
    return Check(score=score, threshold=round(threshold, DECIMALS), passed=bool(passed))


def _rejected(row: dict[str, Any], record: DecisionRecord, reason: str, detail: str) -> dict[str, Any]:
    record.rejected_by = reason
    return {**row, "scores": record.to_json(), "status": STATUS_REJECTED, "reason": reason, "detail": detail}

