"""Judging one clip: decode it once, score it with every enabled filter, keep or reject it, record why.

The filters (``curation.filters``) only return scores; this module owns the thresholds. Each rule
below names a score, the config field holding its threshold, and the rejection reason. Every clip
gets a decision record in its ``scores`` column (index, shard json, and the stage's persisted row of
a rejected clip): a ``shards.scores.DecisionRecord``, with a check per applied rule named by the
rule's reason (``checks.low_resolution = {"score": 1080, "threshold": 720, "passed": true}``), the
reason that rejected the clip, and each filter's raw scores.

Rules run in groups, cheapest first: the source's resolution and display aspect, the clip's duration
(no decoding; only an upper bound, as ``split.min_duration`` already dropped shorter scenes), then
decoding itself (a clip whose decoding stops early is broken, whichever filters are on), the decoded
frames (black or blank), motion, sharpness and blockiness (on the frames at their native size), text,
and watermarks (which use the text filter's overlay tracks). A filter whose config has ``reject: false``
(``filter.sharpness``) records its checks, passed or not, but never rejects; so does a rule whose switch
is off (``scene_text`` unless ``filter.text.reject_scene_text``). Last, a clip that passed gets its
perceptual hash (``filter.near_duplicates``), which no rule checks: near-duplicates are found across the
corpus when it is written (``curation.neardup``).
Outside score-only mode a clip stops at the first group it fails, so text detection (the dominant
cost on a CPU) only runs on clips that passed everything else; a rejected clip's record holds the
scores computed until then. In score-only mode every group runs and nothing is rejected.

The source group depends on the source alone, so the screen stage (``curation.stages.screen``) applies
it right after the probe (``screen_source``): a source that fails it is rejected there, with the same
reason, detail and decision record, and is never split or cut. The record of a source that passes
travels in its row (``scores``) to its clips, and ``ClipFilter.judge`` continues it instead of judging
the source again; a row without it (a work area made before the screen existed) is judged whole here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from curation.config import FilterConfig
from curation.errors import Rejection
from curation.filters.aesthetic import availability as aesthetic_availability
from curation.filters.motion import motion_scores
from curation.filters.phash import embedding_scores, phash_scores
from curation.filters.quality import clip_scores, decode_scores, frame_scores, source_scores
from curation.filters.sharpness import sharpness_scores
from curation.filters.watermark import watermark_score
from curation.frames import FrameSample, sample_clip
from shards.schema import STATUS_REJECTED
from shards.scores import Check, DecisionRecord

if TYPE_CHECKING:
    from curation.filters.aesthetic import AestheticScorer, ClipEmbedder
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
    switch: str = ""  # a boolean field of the filter's config that must be true for failing to reject ("" = always)
    box: str = ""  # a raw score holding the box of what failed, quoted in the rejection's detail


RULES: dict[str, tuple[Rule, ...]] = {
    "source": (  # the source's probe alone: applied by the screen stage, before the split
        Rule("quality", "short_side", "min_short_side", "min", "low_resolution", "the source is not high-definition"),
        Rule("quality", "aspect_deviation", "aspect_tolerance", "max", "aspect_ratio",
             "the display aspect is too far from filter.quality.aspect"),
    ),
    "span": (
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
    "sharpness": (
        Rule("sharpness", "sharpness", "min_sharpness", "min", "blurry",
             "the picture is blurred (or upscaled from a much lower resolution)"),
        Rule("sharpness", "blockiness", "max_blockiness", "max", "blocky",
             "the picture shows 8x8 coding blocks (over-compressed)"),
    ),
    "text": (
        Rule("text", "overlay_text_area", "max_area", "max", "overlay_text",
             "text drawn over the picture (subtitles, captions, credits) covers too much of a frame"),
        Rule("text", "scene_text_area", "max_scene_area", "max", "scene_text",
             "text filmed in the scene (signs, labels) covers too much of a frame", switch="reject_scene_text"),
    ),
    "watermark": (
        Rule("watermark", "watermark_score", "max_score", "max", "watermark",
             "a logo or other mark stays fixed while the picture under it changes", box="watermark_box"),
    ),
    "aesthetic": (
        Rule("aesthetic", "aesthetic", "min_aesthetic", "min", "low_aesthetic",
             "the picture is rated unappealing (LAION aesthetic predictor on CLIP embeddings)"),
    ),
    "phash": (),  # no rule: near-duplicates are found across the corpus at write (curation.neardup)
}

#: A filter group's scores for one clip, from its row, its frame samples and the decision record so far.
Scorer = Callable[[dict[str, Any], dict[str, FrameSample], DecisionRecord], dict[str, Any]]


class ClipFilter:
    """Every enabled filter of ``cfg``, ready to judge clips; holds the text detector when text is on."""

    def __init__(self, cfg: FilterConfig, gpu: bool = False) -> None:
        self.cfg = cfg
        self.gpu = gpu
        self._detector: TextDetector | None = None
        self._aesthetic: AestheticScorer | None = None
        self._clips: dict[str, ClipEmbedder] = {}
        self.aesthetic_on = aesthetic_availability(cfg.aesthetic) is None  # off where its weights are absent

    @property
    def detector(self) -> TextDetector:
        """The text detector, loaded on first use (clips rejected earlier never need it)."""
        if self._detector is None:
            from curation.filters.text import TextDetector

            self._detector = TextDetector(self.cfg.text, gpu=self.gpu)
        return self._detector

    def clip(self, model_dir: str) -> ClipEmbedder:
        """The CLIP vision tower of ``model_dir``, loaded on first use (once, if two scores share it)."""
        if model_dir not in self._clips:
            from curation.filters.aesthetic import ClipEmbedder

            self._clips[model_dir] = ClipEmbedder(model_dir, gpu=self.gpu)
        return self._clips[model_dir]

    @property
    def aesthetic(self) -> AestheticScorer:
        """CLIP and the aesthetic head, loaded on first use."""
        if self._aesthetic is None:
            from curation.filters.aesthetic import AestheticScorer

            self._aesthetic = AestheticScorer(self.cfg.aesthetic, gpu=self.gpu,
                                              clip=self.clip(self.cfg.aesthetic.clip_model))
        return self._aesthetic

    @property
    def embeds_duplicates(self) -> bool:
        """Whether near-duplicates are hashed from CLIP embeddings (``filter.near_duplicates.mode: embedding``)."""
        return self.cfg.near_duplicates.enabled and self.cfg.near_duplicates.mode == "embedding"

    def widths(self) -> dict[str, int]:
        """The frame sizes to decode: small for quality and motion, the widest the text or watermark filter uses."""
        cfg = self.cfg
        widths = {"small": cfg.motion.width}
        detail = [cfg.text.gpu_width if self.gpu else cfg.text.width] if cfg.text.enabled else []
        detail += [cfg.watermark.width] if cfg.watermark.enabled else []
        if detail:
            widths["detail"] = max(detail)
        if cfg.sharpness.enabled:  # the block grid is in coded pixels: frames at the clip's own size
            widths["native"] = 0
        if self.aesthetic_on or self.embeds_duplicates:
            widths["clip"] = cfg.aesthetic.width
        return widths

    def judge(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The clip's row with its decision record; rejected (with reason and detail) if it failed a rule."""
        cfg = self.cfg
        screened = screened_record(row, cfg)
        record = screened if screened is not None else DecisionRecord(score_only=cfg.score_only)
        samples: dict[str, FrameSample] = {}
        failed = next((_RULE_OF[reason] for reason in record.failed if rejects(_RULE_OF[reason], cfg)), None)
        for group, scorer in self._groups(screened is not None):
            if group not in ("source", "span") and not samples:
                try:
                    samples = sample_clip(row["clip_path"], cfg.frames, self.widths(), gap_s=cfg.motion.gap_s,
                                          threads=cfg.threads)
                except Rejection as exc:
                    return [_rejected(row, record, "broken_decode", exc.detail)]
            group_failed = apply_group(record, group, scorer(row, samples, record), cfg)
            failed = failed or group_failed
            if failed is not None and not cfg.score_only:
                break
        if failed is None or cfg.score_only:
            return [{**row, "scores": record.to_json()}]
        return [_rejected(row, record, failed.reason, _detail(failed, record))]

    def _groups(self, screened: bool = False) -> list[tuple[str, Scorer]]:
        """The enabled groups, in the order they run (the source group only if the screen has not applied it)."""
        cfg = self.cfg
        groups: list[tuple[str, Scorer]] = []
        if cfg.quality.enabled:
            if not screened:
                groups.append(("source", lambda row, _, __: source_scores(row, cfg.quality)))
            groups.append(("span", lambda row, _, __: clip_scores(row)))
        if (cfg.quality.enabled or cfg.motion.enabled or cfg.text.enabled or cfg.watermark.enabled
                or cfg.sharpness.enabled or cfg.near_duplicates.enabled or self.aesthetic_on):  # frames decoded
            groups.append(("decode", lambda _, s, __: decode_scores(s["small"])))
        if cfg.quality.enabled:
            groups.append(("frames", lambda _, s, __: frame_scores(s["small"], cfg.quality)))
        if cfg.motion.enabled:
            groups.append(("motion", lambda _, s, __: motion_scores(s["small"])))
        if cfg.sharpness.enabled:
            groups.append(("sharpness", lambda _, s, __: sharpness_scores(s["native"], cfg.sharpness)))
        if cfg.text.enabled:
            groups.append(("text", lambda _, s, __: self.detector.score(s["detail"])))
        if cfg.watermark.enabled:  # after text: overlay text that stays put is evidence of a text logo
            groups.append(("watermark", lambda _, s, record: watermark_score(
                s["detail"], record.scores.get("text", {}).get("text_tracks"), cfg.watermark)))
        if self.aesthetic_on:  # CLIP: the costliest on a CPU after text, so after every cheaper check
            groups.append(("aesthetic", lambda _, s, __: self.aesthetic.score(s["clip"])))
        if cfg.near_duplicates.enabled:  # last: only a clip that passed everything needs its hash
            if self.embeds_duplicates:
                groups.append(("phash", lambda _, s, __: embedding_scores(
                    s["clip"], self.clip(cfg.near_duplicates.clip_model))))
            else:
                groups.append(("phash", lambda _, s, __: phash_scores(s["small"])))
        return groups


def screens(cfg: FilterConfig) -> bool:
    """Whether the source group applies at all: the filter and its quality filter are on."""
    return cfg.enabled and cfg.quality.enabled


def screen_source(row: dict[str, Any], cfg: FilterConfig) -> dict[str, Any]:
    """The source group on a probed source row, as the screen stage applies it (``screens(cfg)`` must hold).

    The row with its decision record so far in ``scores``; rejected, with the reason and detail the
    filter gives a clip of it, when it fails a rule (outside score-only mode).
    """
    record = DecisionRecord(score_only=cfg.score_only)
    failed = apply_group(record, "source", source_scores(row, cfg.quality), cfg)
    if failed is None or cfg.score_only:
        return {**row, "scores": record.to_json()}
    return _rejected(row, record, failed.reason, _detail(failed, record))


def screened_record(row: dict[str, Any], cfg: FilterConfig) -> DecisionRecord | None:
    """The record the screen stage left in the row (a clip inherits its source's), or None when it has none."""
    if not (cfg.quality.enabled and row.get("scores")):
        return None
    record = DecisionRecord.from_json(row["scores"])
    if record.rejected_by is not None or "short_side" not in record.scores.get("quality", {}):
        return None
    record.score_only = cfg.score_only
    return record


def apply_group(record: DecisionRecord, group: str, scores: dict[str, Any], cfg: FilterConfig) -> Rule | None:
    """Record a group's ``scores`` and the checks of its rules; the first rule failed, or None."""
    record.add_scores(RULES[group][0].filter if RULES[group] else group, scores)
    failed = None
    for rule in RULES[group]:
        check = check_rule(rule, scores, cfg)
        if check is not None:
            record.checks[rule.reason] = check
            if not check.passed and failed is None and rejects(rule, cfg):
                failed = rule
    return failed


def rejects(rule: Rule, cfg: FilterConfig) -> bool:
    """Whether failing ``rule`` rejects the clip: not when its filter records its checks only (``reject: false``),
    nor when the rule's own switch is off (``filter.text.reject_scene_text: false``)."""
    section = getattr(cfg, rule.filter, None)
    return getattr(section, "reject", True) and (not rule.switch or bool(getattr(section, rule.switch)))


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


#: Each rule by its reason.
_RULE_OF: dict[str, Rule] = {rule.reason: rule for rules in RULES.values() for rule in rules}


def _detail(rule: Rule, record: DecisionRecord) -> str:
    """The rejection's sentence: the score, how it compares with its threshold, the setting, the meaning."""
    check = record.checks[rule.reason]
    relation = "<" if rule.bound == "min" else ">"
    where = f"filter.{rule.filter}.{rule.limit}" if rule.limit else "frames sampled"
    box = record.scores.get(rule.filter, {}).get(rule.box) if rule.box else None
    at = f" at box {box}" if box else ""
    return f"{rule.filter}.{rule.score} {check.score} {relation} {check.threshold} ({where}){at}: {rule.meaning}"


def _rejected(row: dict[str, Any], record: DecisionRecord, reason: str, detail: str) -> dict[str, Any]:
    record.rejected_by = reason
    return {**row, "scores": record.to_json(), "status": STATUS_REJECTED, "reason": reason, "detail": detail}

