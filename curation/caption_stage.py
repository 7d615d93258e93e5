"""Caption stage: a Ray Data actor pool where each actor loads BLIP-2 once and captions batches of clips.

Ray Data hands each ``CaptionActor`` batches of rows (``caption.batch_size`` clips); the actor reads
each clip's frames, captions every frame of the batch in one model call, and keeps the pipeline's
guarantees through ``curation.stages``: results persisted per clip under ``work/stages/caption/``
(a resubmitted job does not caption a clip twice), earlier rejections passed through, and a clip
that cannot be read or captioned costs its own row, never its batch.

Each actor also accounts for its time (model loading, captioning, waiting for input) in
``work/stages/caption/_actors/``: a GPU actor that mostly waits is starved by the stages upstream.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.caption import Captioner
from curation.config import CaptionConfig, config_from_dict
from curation.errors import Rejection
from curation.frames import Frame, middle_index, sample_frames
from curation.stages import WorkArea, resume_or_compute, run_guarded

log = logging.getLogger(__name__)

STAGE = "caption"


@dataclass
class ActorTimes:
    """Where one caption actor's wall time went, in seconds."""

    load_s: float = 0.0  # loading the model
    busy_s: float = 0.0  # inside batches: reading frames, captioning, persisting
    wait_s: float = 0.0  # between batches (and before the first): waiting for the upstream stages
    batches: int = 0
    clips: int = 0  # clips captioned (rows resumed from disk or passed through not counted)
    frames: int = 0  # clips x caption.frames


def caption_rows(rows: list[dict[str, Any]], captioner: Captioner, cfg: CaptionConfig) -> list[list[dict[str, Any]]]:
    """Caption ``rows`` (clips not yet captioned): every readable frame in one model call.

    If that call fails (say, out of GPU memory on one odd frame size), each clip is captioned on
    its own, so that the failure lands on the clip that causes it.
    """
    frames: list[list[Frame] | Exception] = []
    for row in rows:
        try:
            frames.append(sample_frames(row["clip_path"], cfg.frames))
        except Exception as exc:  # re-raised per row below, where run_guarded turns it into a rejection
            frames.append(exc)
    readable = [f for f in frames if not isinstance(f, Exception)]
    texts: list[list[str] | None] = [None] * len(rows)
    try:
        flat = captioner.caption([frame.image for clip in readable for frame in clip])
        batch = iter(flat)
        texts = [None if isinstance(f, Exception) else [next(batch) for _ in f] for f in frames]
    except Exception:
        log.warning("captioning %d clips together failed; captioning them one by one", len(readable), exc_info=True)

    def one(row: dict[str, Any], clip: list[Frame] | Exception, captions: list[str] | None) -> list[dict[str, Any]]:
        if isinstance(clip, Exception):
            raise clip
        if captions is None:
            captions = captioner.caption([frame.image for frame in clip])
        return [{**row, **_caption_columns(clip, captions, captioner)}]

    return [run_guarded(STAGE, row, functools.partial(one, row, clip, text))
            for row, clip, text in zip(rows, frames, texts, strict=True)]


def _caption_columns(clip: list[Frame], captions: list[str], captioner: Captioner) -> dict[str, Any]:
    """The caption columns of one clip; a clip whose main frame got no caption is rejected."""
    main = captions[middle_index(len(captions))]
    if not main:
        raise Rejection("empty_caption", f"{captioner.name} generated no usable text for the frame at "
                                         f"{clip[middle_index(len(clip))].time:.3f} s of the clip")
    listed = [{"time": frame.time, "text": text} for frame, text in zip(clip, captions, strict=True)]
    return {"caption": main, "captions": json.dumps(listed, ensure_ascii=False),
            "caption_model": captioner.name, "caption_revision": captioner.revision}


class CaptionActor:
    """Ray Data callable class: the model loads once in ``__init__``; each call captions one batch."""

    def __init__(self, config: dict[str, Any]) -> None:
        created = time.monotonic()
        cfg = config_from_dict(config)
        self.cfg = cfg.caption
        self.work = WorkArea(cfg.output)
        self.captioner = Captioner.load(cfg.caption)
        self.times = ActorTimes(load_s=time.monotonic() - created)
        self.idle_since = time.monotonic()
        self.record = self.work.stage_dir(STAGE) / "_actors" / f"{socket.gethostname()}-{os.getpid()}.json"

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.monotonic()
        self.times.wait_s += started - self.idle_since
        out = resume_or_compute(batch, STAGE, self.work, self._compute)
        self.idle_since = time.monotonic()
        self.times.busy_s += self.idle_since - started
        self.times.batches += 1
        _write_json(self.record, {**asdict(self.times), "updated": time.time(), "device": str(self.captioner.device),
                                  "dtype": str(self.captioner.dtype).removeprefix("torch.")})
        return out

    def _compute(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        self.times.clips += len(rows)
        self.times.frames += len(rows) * self.cfg.frames
        return caption_rows(rows, self.captioner, self.cfg)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)


def read_actor_times(work: WorkArea) -> list[dict[str, Any]]:
    """What every caption actor of the runs on this work area recorded about its time."""
    return [json.loads(p.read_text()) for p in sorted((work.stage_dir(STAGE) / "_actors").glob("*.json"))]
