"""Caption stage: a pool of actors that each load the captioner once and caption batches of clips.

Each actor reads the frames of a batch of ``caption.batch_size`` clips and captions them all in
one model call: BLIP-2 every frame alone (the clip's caption is its middle frame's), or a VLM
(``caption.model: vlm``) each clip's frames as one video. If that call fails (say, out of GPU
memory on one odd frame size) the runner redoes the batch clip by clip, so the failure lands on the
clip that causes it. A clip that gets no caption is rejected as ``empty_caption``.

Each actor also accounts for its time (model loading, captioning, waiting for input) in
``work/state/caption/_actors/``: a GPU actor that mostly waits is starved by the stages upstream.
With ``caption.enabled: false`` the stage is a plain task that gives every clip empty captions.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from curation.caption import ClipCaption, check_weights, load_captioner, uncaptioned, weights_bytes
from curation.config import CurationConfig
from curation.errors import Rejection
from curation.frames import Frame, sample_frames
from curation.stage import JobResources, Resources, Row, Stage, StageContext, reject
from curation.workarea import WorkArea

log = logging.getLogger(__name__)

#: Memory of a caption actor besides its model's weights: Python, torch, transformers, a batch of frames
#: (Ray Data measured 0.6 GiB for the tiny model).
ACTOR_RUNTIME_BYTES = 1024**3


@dataclass
class ActorTimes:
    """Where one caption actor's wall time went, in seconds."""

    load_s: float = 0.0  # loading the model
    busy_s: float = 0.0  # inside batches: reading frames, captioning
    wait_s: float = 0.0  # between batches (and before the first): waiting for the upstream stages
    batches: int = 0
    clips: int = 0
    frames: int = 0  # clips x frames per clip (caption.frames, or caption.vlm_frames)


class Caption(Stage):
    name = "caption"
    per_clip = True

    @classmethod
    def check(cls, cfg: CurationConfig) -> None:
        if cfg.caption.enabled:
            # Actors may run in another working directory than the driver: hand them an absolute path.
            cfg.caption.model_path = str(check_weights(cfg.caption.model_path, cfg.caption.model))

    @classmethod
    def batch_size(cls, cfg: CurationConfig) -> int:
        return cfg.caption.batch_size if cfg.caption.enabled else 1

    @classmethod
    def resources(cls, cfg: CurationConfig, job: JobResources) -> Resources:
        if not cfg.caption.enabled:
            return super().resources(cfg, job)
        gpus = job.gpus(cfg.caption.num_gpus, "caption.num_gpus")
        # A CPU actor holds the model in RAM for its life: declared, Ray never packs more actors on a node
        # than fit. It also keeps Ray Data from fusing the CPU stages upstream into the actors.
        directory = check_weights(cfg.caption.model_path, cfg.caption.model)
        memory = None if gpus else weights_bytes(directory) + ACTOR_RUNTIME_BYTES
        # A GPU actor holds its CPU to decode frames and feed the GPU. On a cluster without GPUs an actor would
        # hold its CPU for the whole job, idle whenever it waits for clips, and Ray would run one CPU task fewer
        # on its node (on 2 CPUs: the CPU stages one at a time). There it reserves none and shares the cores
        # while it captions, with resources.caption_cpus torch threads (``setup``).
        cpus = cfg.resources.caption_cpus if gpus else 0.0
        log.info("caption stage: %s, %d actor(s), %s GPU and %s CPU each, %d clips per batch", cfg.caption.model,
                 cfg.caption.actors, gpus, cpus, cfg.caption.batch_size)
        return Resources(num_cpus=cpus, num_gpus=gpus, memory=memory, actors=cfg.caption.actors)

    def __init__(self, cfg: CurationConfig) -> None:
        super().__init__(cfg)
        self.created = time.monotonic()  # the actor's start: until its first clips (and the model load) it waits

    def setup(self) -> None:
        if not self.cfg.caption.enabled:
            return
        loading = time.monotonic()
        self.captioner = load_captioner(self.cfg.caption)
        if self.captioner.device.type == "cpu":  # no CPU reserved (``resources``): Ray's OMP_NUM_THREADS=1 is not it
            import torch  # here, not at the top: the driver imports the stages and never torch

            torch.set_num_threads(max(1, round(self.cfg.resources.caption_cpus)))
        self.times = ActorTimes(load_s=time.monotonic() - loading, wait_s=loading - self.created)
        self.idle_since = time.monotonic()
        work = WorkArea.of(self.cfg.output)
        self.record = work.stage_dir(self.name) / "_actors" / f"{socket.gethostname()}-{os.getpid()}.json"

    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        if not self.cfg.caption.enabled:
            return [{**row, **uncaptioned()} for row in rows]
        started = time.monotonic()
        self.times.wait_s += started - self.idle_since
        out = self._caption(rows, ctx)
        self.idle_since = time.monotonic()
        self.times.busy_s += self.idle_since - started
        self.times.batches += 1
        self.times.clips += len(rows)
        self.times.frames += len(rows) * self.captioner.frames_per_clip
        self.record.write_text(json.dumps({**asdict(self.times), "updated": time.time(),
                                           "device": str(self.captioner.device),
                                           "dtype": str(self.captioner.dtype).removeprefix("torch.")}))
        return out

    def _caption(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        """Every clip of the batch in one model call; a clip whose frames cannot be read is rejected alone."""
        frames: list[list[Frame] | None] = []
        out: list[Row | None] = []
        for row in rows:
            try:
                frames.append(sample_frames(str(ctx.local(row["clip_path"])), self.captioner.frames_per_clip))
                out.append(None)
            except Rejection as exc:  # the clip, not the batch, is unreadable
                frames.append(None)
                out.append(reject(row, exc.reason, exc.detail))
        readable = [clip for clip in frames if clip is not None]
        captions = iter(self.captioner.caption_clips(readable) if readable else [])
        for i, clip in enumerate(frames):
            if clip is not None:
                out[i] = self._captioned(rows[i], next(captions))
        return [r for r in out if r is not None]

    def _captioned(self, row: Row, caption: ClipCaption) -> Row:
        if not caption.text:
            return reject(row, "empty_caption", f"{self.captioner.name} generated no usable text for "
                                                f"{caption.seen} of the clip")
        return {**row, "caption": caption.text, "captions": json.dumps(caption.entries, ensure_ascii=False),
                "caption_model": self.captioner.name, "caption_revision": self.captioner.revision}


def read_actor_times(work: WorkArea) -> list[dict[str, Any]]:
    """What every caption actor of the runs on this work area recorded about its time."""
    return [json.loads(f.read_text()) for f in (work.stage_dir(Caption.name) / "_actors").files()
            if f.name.endswith(".json")]


STAGE = Caption
