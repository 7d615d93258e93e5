"""Training clips streamed from corpus shards: shuffled, split across ranks and workers, mixed, resumable.

A corpus is named by its root, a directory or an object-store prefix (``s3://bucket/corpus``); its
shards are listed in name order and streamed one at a time (``shards.reader.tar_samples``), so
nothing is downloaded whole. Every DataLoader worker of every rank reads its own *part* of each
corpus (its share of the shards, or, when a corpus has fewer shards than there are parts, every
``parts``-th sample of all of them), through a shuffle buffer. Shard order and shuffle buffer are seeded from
(seed, corpus, epoch, part), and the corpus each next sample comes from, and where its frames start,
from (seed, part, draw number). So the stream of every worker is a pure function of its position:
per corpus ``(epoch, samples taken this epoch)`` plus the number of draws (and of batches: with corpora of
different frame counts, ``data.corpora[].frames``, e.g. 1 for images, each batch's frame count is drawn from
(seed, DataLoader worker, batch number), the same on every rank, and a batch holds samples of that frame
count only).

Resuming: each batch carries its worker's position after the batch. The trainer keeps the position
of the last batch it *consumed* from each worker (prefetched batches do not count) and saves it in
the checkpoint. A resumed worker replays its epoch's shuffled stream without decoding the videos
(it only re-reads the tar bytes up to its position) and continues exactly where it stopped.
DataLoader takes batches from its workers round-robin, so on resume the workers are renumbered
(``rotation``) so that the one whose turn was next comes first: the batches after a resume are the
batches an uninterrupted run would have had. The number of ranks and workers must stay the same.

Samples whose clip is shorter than the frames asked for, or that do not decode, are skipped and
counted (``short``, ``bad`` in the position), never silently lost; so are, with buckets
(``training.buckets``), clips that fit no bucket (``no_bucket``), and the samples of each bucket are
counted (``buckets``). A corpus whose samples are all skipped for a whole epoch stops the loader with
``NothingToTrainOnError`` saying what to change, rather than skipping forever.

Sidecars (``training.sidecars``): a corpus with precomputed latents is streamed from its sidecar
shards instead (same names, same samples in the same order, so the same shuffled stream and resume
positions), and its batches carry the posterior and caption embeddings instead of the video.

Shards that are not readable tars (truncated, overwritten with other bytes, empty) are skipped too:
the samples before the damage are kept, the rest of the shard is passed over, and the shard is
recorded in the position (``bad_shards``: per corpus, the sorted uris of the unreadable shards met so
far). Every epoch re-reads the same bytes, so a resumed run meets the same damage at the same place.
``data.max_bad_shards`` bounds how many unreadable shards of a corpus a rank may meet: a count (>= 1)
or a share of the corpus's shards (< 1, rounded up; the default 0.02 tolerates 1 in up to 50
shards, 2 in up to 100); past it the loader raises ``UnreadableShardsError`` naming them. Each rank
counts the shards it has met; as each epoch deals the shards out anew, every rank meets all of them
within a few epochs.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import safetensors
import safetensors.torch
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shards.layout import SHARDS_DIR, shard_locations
from shards.reader import open_stream, tar_samples
from storage import Location
from training.buckets import BucketTable, frames_needed
from training.config import DataConfig

log = logging.getLogger("videofactory.train")


@dataclass(frozen=True)
class ClipSpec:
    """How a decoded video becomes T frames of the training size."""

    frames: int
    stride: int | None
    fps: float | None
    width: int
    height: int

    @classmethod
    def of(cls, cfg: DataConfig, frames: int | None = None) -> ClipSpec:
        """The spec of ``cfg``, with ``frames`` (a corpus's own frame count) in place of ``data.frames``."""
        return cls(frames or cfg.frames, cfg.stride, cfg.fps, cfg.width, cfg.height)

    def sampled_fps(self, source_fps: float) -> float:
        """Frames per second of the frames taken from a clip of ``source_fps`` (the fps conditioning input)."""
        return float(self.fps) if self.fps is not None else source_fps / float(self.stride)

    def frame_indices(self, available: int, source_fps: float, rng: random.Random) -> list[int] | None:
        """Indices of the frames to take from a clip of ``available`` frames; None when it is too short."""
        step = float(self.stride) if self.fps is None else source_fps / self.fps
        last_start = available - frames_needed(self.frames, self.stride, self.fps, source_fps)
        if last_start < 0:
            return None
        start = rng.randint(0, last_start)
        return [start + round(i * step) for i in range(self.frames)]


def resize_crop(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """RGB (height, width, 3) uint8: scaled (area filter) to cover the size, then centre-cropped."""
    scale = max(width / frame.width, height / frame.height)
    sw, sh = max(width, math.ceil(frame.width * scale)), max(height, math.ceil(frame.height * scale))
    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (sh - height) // 2, (sw - width) // 2
    return rgb[top : top + height, left : left + width]


def decode_clip(mp4: bytes, spec: ClipSpec, rng: random.Random) -> np.ndarray | None:
    """(T, height, width, 3) uint8 frames of ``mp4``, or None when it has too few frames.

    Decoding stops at the last frame needed. Raises ``av.FFmpegError`` for a file that does not decode.
    """
    decoded = decode_clip_with_fps(mp4, spec, rng)
    return None if decoded is None else decoded[0]


#: Members that make a sample a still image (img2dataset's and WebDataset's usual extensions), trained as T = 1.
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")
#: The frame-rate conditioning of a still image when ``data.fps`` is unset: what ``sample`` asks for by default.
STILL_FPS = 8.0


def decode_sample(sample: dict[str, Any], spec: ClipSpec, rng: random.Random) -> tuple[np.ndarray, float] | None:
    """``decode_clip_with_fps`` of the sample's ``mp4``, or its still image (``IMAGE_MEMBERS``) as one frame.

    A still image gives one frame only: in a spec of more frames it is too short (None), like a short clip.
    """
    if "mp4" in sample:
        return decode_clip_with_fps(sample["mp4"], spec, rng)
    member = next((m for m in IMAGE_MEMBERS if m in sample), None)
    if member is None:
        raise KeyError(f"neither mp4 nor an image ({', '.join(IMAGE_MEMBERS)}) in the sample")
    if spec.frames != 1:
        return None
    with av.open(io.BytesIO(sample[member])) as container:
        frame = next(container.decode(video=0))
        return resize_crop(frame, spec.width, spec.height)[None], spec.fps or STILL_FPS


def decode_clip_with_fps(mp4: bytes, spec: ClipSpec, rng: random.Random) -> tuple[np.ndarray, float] | None:
    """``decode_clip``'s frames and their frame rate (``ClipSpec.sampled_fps``), or None when too short."""
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        frames: Iterator[av.VideoFrame] = container.decode(stream)
        available = stream.frames
        if available <= 0:  # no frame count in the header: count by decoding
            decoded = list(frames)
            available, frames = len(decoded), iter(decoded)
        wanted = spec.frame_indices(available, fps, rng)
        if wanted is None:
            return None
        picked: dict[int, np.ndarray] = {}
        for index, frame in enumerate(frames):
            if index in wanted:
                picked[index] = resize_crop(frame, spec.width, spec.height)
            if index >= wanted[-1]:
                break
        if len(picked) < len(set(wanted)):  # the header promised frames the stream does not have
            return None
        return np.stack([picked[i] for i in wanted]), spec.sampled_fps(fps)


class UnreadableShardsError(RuntimeError):
    """More shards of a corpus are unreadable than ``data.max_bad_shards`` allows (or all of them are)."""


class NothingToTrainOnError(RuntimeError):
    """A whole epoch of a corpus's part gave no sample to train on: every one too short, undecodable or in no
    bucket. Without it the loader would skip samples forever and training would hang with no error."""


class FruitlessEpochs:
    """Notices a corpus whose samples are all skipped: once a whole epoch of it (a worker's part) has passed
    with nothing usable, ``skipped`` raises ``NothingToTrainOnError`` saying what to change."""

    def __init__(self, position: dict[str, Any]):
        self.position = position
        self.since: dict[int, int] = {}  # corpus -> epoch of its first skip after its last usable sample

    def used(self, corpus: int) -> None:
        self.since.pop(corpus, None)

    def skipped(self, corpus: int, reason: str, shards: list[str]) -> None:
        """Count the skip (``reason``: ``short``, ``bad`` or ``no_bucket``) and raise after a fruitless epoch."""
        self.position[reason] += 1
        epoch = self.position["corpora"][corpus][0]
        first = self.since.setdefault(corpus, epoch)
        if epoch >= first + 2:  # epoch first + 1 passed from start to end without one usable sample
            counts = ", ".join(f"{self.position[k]} {k}" for k in ("short", "bad", "no_bucket"))
            raise NothingToTrainOnError(
                f"corpus {corpus} (shards {shards[:2]}...) gave nothing to train on in a whole epoch ({counts} "
                "skipped so far): its clips are shorter than the frames asked (data.frames x data.stride, or "
                "data.fps), do not decode, or fit no bucket (data.buckets); ask fewer frames, add buckets, "
                "or check the corpus with `videofactory stats`")


def initial_position(num_corpora: int) -> dict[str, Any]:
    """A worker's position before its first sample (ints, strings and lists only: it goes into checkpoints)."""
    return {"corpora": [[0, 0] for _ in range(num_corpora)], "draws": 0, "batches": 0, "samples": 0, "short": 0,
            "bad": 0, "bad_shards": [[] for _ in range(num_corpora)]}


def bad_shard_limit(max_bad_shards: float, shards: int) -> int:
    """Unreadable shards tolerated in a corpus of ``shards``: a count (>= 1), or a share (< 1) rounded up."""
    return int(max_bad_shards) if max_bad_shards >= 1 else math.ceil(max_bad_shards * shards)


def readable_samples(shards: list[str], bad: set[str]) -> Iterator[dict[str, Any]]:
    """The raw samples (``shards.reader.tar_samples``) of each shard in turn, passing over unreadable ones.

    A shard that turns out not to be a readable tar ends where its damage starts (the samples before it
    are kept); its uri is added to ``bad``. Errors of the storage itself (a missing shard, a network
    failure) are not the shard's content and still raise.
    """
    for shard in shards:
        location = Location(shard)
        try:
            with open_stream(location) as stream:
                yield from tar_samples(stream, location.uri)
        except tarfile.TarError as exc:
            if shard not in bad:
                log.warning("skipping the rest of shard %s: it is not a readable tar (%s)", shard, exc)
            bad.add(shard)


def corpus_shards(root: Location) -> list[Location]:
    """The shards of the corpus at ``root``: ``shards/*.tar`` of a curated corpus, else the ``.tar`` files in
    ``root`` itself (a WebDataset folder of still images, as img2dataset writes one)."""
    shards = shard_locations(root) or [f for f in root.files() if f.name.endswith(".tar")]
    if not shards:
        raise FileNotFoundError(f"no shards in {root / SHARDS_DIR} nor {root}: is it a corpus written by "
                                "`videofactory curate`, or a folder of WebDataset .tar shards?")
    return shards


def corpus_root(path: str) -> Location:
    """The corpus a configured path names: its root, also when the path given is its ``shards/`` folder."""
    location = Location(path)
    return location.parent if location.name == SHARDS_DIR else location


def corpus_part(shards: list[str], seed: int, corpus: int, part: int, parts: int, bufsize: int,
                epoch: int, position: int, bad: set[str] | None = None) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Endless raw samples of one part of a corpus, from (epoch, position): ``(epoch, position after, sample)``.

    The uris of unreadable shards met are added to ``bad`` (see ``readable_samples``).
    """
    bad = set() if bad is None else bad
    while True:
        order = list(shards)
        random.Random(f"{seed}/shards/{corpus}/{epoch}").shuffle(order)
        by_shard = len(order) >= parts
        mine = order[part::parts] if by_shard else order
        raw = readable_samples(mine, bad)
        if not by_shard:
            raw = (s for i, s in enumerate(raw) if i % parts == part)
        rng = random.Random(f"{seed}/buffer/{corpus}/{epoch}/{part}")
        taken = 0
        for taken, sample in enumerate(wds.shuffle(bufsize, bufsize, rng=rng)(iter(raw)), start=1):
            if taken > position:
                yield epoch, taken, sample
        if taken == 0:
            if bad >= set(shards):
                raise UnreadableShardsError(f"every shard of the corpus is unreadable: {sorted(bad)}")
            if not by_shard or not bad.intersection(mine):  # not just this epoch's deal of unreadable shards
                raise ValueError(f"part {part} of {parts} of the corpus with shards {shards[:2]}... holds no "
                                 "samples: use fewer ranks or data.workers, or a larger corpus")
        epoch, position = epoch + 1, 0


class ClipStream(IterableDataset):
    """Endless batches ``{"video": (B, T, H, W, 3) uint8, "fps": (B,) float32, "caption", "key", "bucket", "worker",
    "position"}``; from sidecars (``training.sidecars``) ``"latent_mean"`` and ``"latent_logvar"`` (B, T, C, h, w)
    and ``"text"`` (B, L, D) take the place of ``"video"``.

    With corpora of different frame counts (``data.corpora[].frames``, e.g. 1 for images), each batch holds one
    frame count T: it is drawn per batch with probability proportional to the summed weights of the corpora
    that have it (from (seed, worker, batch number): every rank's n-th batch has the same T), then each sample's
    corpus among those by weight.

    With buckets (``data.buckets``, ``training.buckets``) every draw picks a corpus by weight, its next sample
    goes to its bucket's pending batch, and a batch is yielded when one fills (``bucket`` is its index; -1
    without buckets). The pending samples are part of the position (``pending``: per bucket, the corpus,
    epoch, sample number and draw of each), so a resumed worker re-reads them and continues exactly.
    """

    def __init__(self, cfg: DataConfig, seed: int, rank: int = 0, world: int = 1,
                 positions: list[dict[str, Any]] | None = None, rotation: int = 0,
                 sidecars: list[str | None] | None = None) -> None:
        roots = [corpus_root(c.path) for c in cfg.corpora]
        self.shards = [[s.uri for s in corpus_shards(root)] for root in roots]  # in name order
        self.weights = [c.weight for c in cfg.corpora]
        self.frames = [c.frames for c in cfg.corpora]
        self.specs = [ClipSpec.of(cfg, c.frames) for c in cfg.corpora]
        self.spec, self.batch_size, self.bufsize = ClipSpec.of(cfg), cfg.batch_size, cfg.shuffle_buffer
        self.table = BucketTable.of(cfg)
        # corpus indices by frame count: one group (the usual case) draws nothing per batch; with buckets every
        # draw may come from any corpus
        self.groups = ([list(range(len(self.specs)))] if self.table else
                       [[c for c, spec in enumerate(self.specs) if spec.frames == t]
                        for t in sorted({spec.frames for spec in self.specs})])
        self.sidecars = self._usable(sidecars or [None] * len(self.shards), cfg)
        for c, sidecar in enumerate(self.sidecars):  # same shard names, same samples in the same order
            if sidecar is not None:
                self.shards[c] = [(Location(sidecar) / SHARDS_DIR / Location(s).name).uri for s in self.shards[c]]
        self.seed, self.rank, self.world, self.workers = seed, rank, world, max(1, cfg.workers)
        self.positions = copy.deepcopy(positions) or [initial_position(len(self.shards)) for _ in range(self.workers)]
        buckets = len(self.table) if self.table else 0
        for position in self.positions:  # a checkpoint written before shards were checked, or buckets, has none
            position.setdefault("bad_shards", [[] for _ in self.shards])
            position.setdefault("batches", 0)
            position.setdefault("no_bucket", 0)
            position.setdefault("buckets", [0] * buckets)
            position.setdefault("pending", [[] for _ in range(buckets)])
            if len(position["buckets"]) != buckets:
                raise ValueError(f"the checkpoint's data position has {len(position['buckets'])} buckets, data.buckets "
                                 f"has {buckets}: resume with the same bucket table")
        self.rotation = rotation

    def _usable(self, sidecars: list[str | None], cfg: DataConfig) -> list[str | None]:
        """Corpora that share batches must all come from sidecars or all be encoded on the fly."""
        usable = list(sidecars)
        for group in self.groups:
            have = [c for c in group if sidecars[c] is not None]
            if have and len(have) < len(group):
                log.warning("corpora %s have sidecars but %s, which share their batches, have none: all of them are "
                            "encoded on the fly (run `videofactory encode` on the others)",
                            [cfg.corpora[c].path for c in have], [cfg.corpora[c].path for c in group if c not in have])
                for c in have:
                    usable[c] = None
        return usable

    def _item(self, corpus: int, sample: dict[str, Any], spec: ClipSpec, rng: random.Random) -> dict[str, Any] | str:
        """One training sample of a raw one: the decoded frames (or the sidecar's tensors), its frame rate, caption
        and key; or why it is skipped (``short``, ``bad``, ``no_bucket``: a counter of the position)."""
        item: dict[str, Any] = {"key": sample["__key__"], "caption": sample.get("txt", b"").decode("utf-8").strip()}
        if self.sidecars[corpus] is not None:
            try:
                record = sidecar_record(sample)
                if record["skipped"]:
                    return record["skipped"]
                tensors = safetensors.torch.load(sample["safetensors"])
                return {**item, "latent_mean": tensors["mean"], "latent_logvar": tensors["logvar"],
                        "text": tensors["text"], "fps": float(record["fps"])}
            except (KeyError, ValueError, safetensors.SafetensorError) as exc:
                log.warning("skipping sample %s: its sidecar is unreadable (%s)", sample.get("__key__"), exc)
                return "bad"
        try:
            decoded = decode_sample(sample, spec, rng)
        except (av.FFmpegError, IndexError, KeyError, StopIteration) as exc:
            log.warning("skipping sample %s: it does not decode (%s)", sample.get("__key__"), exc)
            return "bad"
        if decoded is None:
            return "short"
        return {**item, "video": torch.from_numpy(decoded[0]), "fps": decoded[1]}

    def _bucket_of(self, corpus: int, sample: dict[str, Any]) -> int | str:
        """The bucket of a raw sample, from its metadata (or its sidecar's record), or why it has none."""
        try:
            if self.sidecars[corpus] is not None:
                record = sidecar_record(sample)
                return record["skipped"] or record["bucket"]
            meta = json.loads(sample["json"])
        except (KeyError, ValueError) as exc:
            log.warning("skipping sample %s: its metadata is unreadable (%s)", sample.get("__key__"), exc)
            return "bad"
        bucket = self.table.assign(meta, self.frames[corpus])
        return "no_bucket" if bucket is None else bucket

    def _bucket_spec(self, bucket: int) -> ClipSpec:
        b = self.table[bucket]
        return ClipSpec(b.frames, self.spec.stride, self.spec.fps, b.width, b.height)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = ((info.id if info else 0) + self.rotation) % self.workers
        part, parts = self.rank * self.workers + worker, self.world * self.workers
        position = copy.deepcopy(self.positions[worker])
        bad = [set(names) for names in position["bad_shards"]]
        starts = [tuple(p) for p in position["corpora"]]
        for refs in position["pending"]:  # re-read the samples still pending in a bucket
            for corpus, epoch, taken, _ in refs:
                starts[corpus] = min(starts[corpus], (epoch, taken - 1))
        streams = [corpus_part(shards, self.seed, c, part, parts, self.bufsize, *starts[c], bad[c])
                   for c, shards in enumerate(self.shards)]
        batches = self._bucketed(streams, bad, part, position) if self.table else self._grouped(streams, bad, part,
                                                                                                position)
        for batch in batches:
            yield {**batch, "worker": worker, "position": copy.deepcopy(position)}

    def _draw(self, streams: list[Iterator], bad: list[set[str]], group: list[int], part: int,
              position: dict[str, Any]) -> tuple[int, int, random.Random, dict[str, Any]]:
        """The next draw: its corpus (by weight among ``group``), number, generator and raw sample."""
        draw = position["draws"]
        rng = random.Random(f"{self.seed}/draw/{part}/{draw}")
        position["draws"] += 1
        corpus = group[rng.choices(range(len(group)), weights=[self.weights[c] for c in group])[0]]
        epoch, taken, sample = next(streams[corpus])
        position["corpora"][corpus] = [epoch, taken]
        position["bad_shards"][corpus] = sorted(bad[corpus])
        return corpus, draw, rng, sample

    def _grouped(self, streams: list[Iterator], bad: list[set[str]], part: int,
                 position: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Batches of ``batch_size`` samples of one frame count, every clip at width x height."""
        fruitless = FruitlessEpochs(position)
        while True:
            group = self.groups[0]
            if len(self.groups) > 1:  # one frame count per batch, drawn by the groups' summed weights
                # from (seed, worker, batch number), not the part: every rank's n-th batch has the same frame count,
                # so DDP/FSDP never see a T = 1 batch (temporal layers unused) on one rank and video on another
                worker = part % self.workers
                batch_rng = random.Random(f"{self.seed}/batch/{worker}/{position['batches']}")
                group = batch_rng.choices(self.groups, weights=[sum(self.weights[c] for c in g)
                                                                for g in self.groups])[0]
            position["batches"] += 1
            items: list[dict[str, Any]] = []
            while len(items) < self.batch_size:
                corpus, _, rng, sample = self._draw(streams, bad, group, part, position)
                item = self._item(corpus, sample, self.specs[corpus], rng)
                if isinstance(item, str):
                    fruitless.skipped(corpus, item, self.shards[corpus])
                else:
                    fruitless.used(corpus)
                    items.append(item)
            position["samples"] += len(items)
            yield {**collate(items), "bucket": -1}

    def _bucketed(self, streams: list[Iterator], bad: list[set[str]], part: int,
                  position: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Batches of one bucket each, yielded as each bucket's pending batch fills."""
        refs = position["pending"]
        pending: list[list[Any]] = [[None] * len(bucket_refs) for bucket_refs in refs]
        wanted = {(c, e, t): (b, i, d) for b, bucket_refs in enumerate(refs)
                  for i, (c, e, t, d) in enumerate(bucket_refs)}
        for corpus in sorted({c for c, _, _ in wanted}):  # resuming: re-read the pending samples (only they decode)
            at = tuple(position["corpora"][corpus])
            while True:
                epoch, taken, sample = next(streams[corpus])
                if (corpus, epoch, taken) in wanted:
                    b, i, draw = wanted[(corpus, epoch, taken)]
                    item = self._item(corpus, sample, self._bucket_spec(b), self._frames_rng(part, draw))
                    if isinstance(item, str):
                        raise RuntimeError(f"sample {sample['__key__']} of a pending batch no longer loads ({item})")
                    pending[b][i] = item
                if (epoch, taken) >= at:
                    break
        fruitless = FruitlessEpochs(position)
        while True:
            corpus, draw, _, sample = self._draw(streams, bad, self.groups[0], part, position)
            bucket = self._bucket_of(corpus, sample)
            if isinstance(bucket, str):
                fruitless.skipped(corpus, bucket, self.shards[corpus])
                continue
            item = self._item(corpus, sample, self._bucket_spec(bucket), self._frames_rng(part, draw))
            if isinstance(item, str):
                fruitless.skipped(corpus, item, self.shards[corpus])
                continue
            fruitless.used(corpus)
            pending[bucket].append(item)
            refs[bucket].append([corpus, *position["corpora"][corpus], draw])
            if len(pending[bucket]) == self.table[bucket].batch_size:
                batch, pending[bucket], refs[bucket] = pending[bucket], [], []
                position["batches"] += 1
                position["samples"] += len(batch)
                position["buckets"][bucket] += len(batch)
                yield {**collate(batch), "bucket": bucket}

    def _frames_rng(self, part: int, draw: int) -> random.Random:
        """Where the frames of a draw start, with buckets: its own generator, as the sample may be re-read on resume."""
        return random.Random(f"{self.seed}/frames/{part}/{draw}")


def sidecar_record(sample: dict[str, Any]) -> dict[str, Any]:
    """The ``<key>.json`` record of a sidecar sample (``training.sidecars``)."""
    return json.loads(sample["json"])


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch of samples from ``ClipStream._item`` (all decoded, or all from sidecars)."""
    tensors = ("video",) if "video" in items[0] else ("latent_mean", "latent_logvar", "text")
    return {**{name: torch.stack([i[name] for i in items]) for name in tensors},
            "fps": torch.tensor([i["fps"] for i in items], dtype=torch.float32),
            "caption": [i["caption"] for i in items], "key": [i["key"] for i in items]}


class ResumableLoader:
    """A DataLoader over ``ClipStream`` that knows the data position of the batches consumed so far."""

    def __init__(self, cfg: DataConfig, seed: int, rank: int = 0, world: int = 1,
                 state: dict[str, Any] | None = None, sidecars: list[str | None] | None = None) -> None:
        workers = max(1, cfg.workers)
        if state is not None and len(state["workers"]) != workers:
            raise ValueError(f"the checkpoint's data position is for {len(state['workers'])} data.workers per rank, "
                             f"the config has {cfg.workers}: resume with the same number")
        self.next_worker = state["next_worker"] if state else 0
        dataset = ClipStream(cfg, seed, rank, world, state["workers"] if state else None, rotation=self.next_worker,
                             sidecars=sidecars)
        self.sidecars = dataset.sidecars  # per corpus, the sidecars it streams (None: encoded on the fly)
        self.positions = copy.deepcopy(dataset.positions)  # of the last batch consumed from each worker
        self.workers = workers
        self.max_bad_shards = cfg.max_bad_shards
        self.shard_counts = [len(shards) for shards in dataset.shards]
        self.loader = DataLoader(dataset, batch_size=None, num_workers=cfg.workers,
                                 prefetch_factor=2 if cfg.workers else None,
                                 generator=torch.Generator().manual_seed(seed))  # leaves the global RNG alone
        self._iter: Iterator[dict[str, Any]] | None = None

    def __next__(self) -> dict[str, Any]:
        if self._iter is None:
            self._iter = iter(self.loader)
        batch = next(self._iter)
        self.positions[batch["worker"]] = batch["position"]
        self.next_worker = (batch["worker"] + 1) % self.workers
        self._check_bad_shards()
        return batch

    def bad_shards(self) -> list[list[str]]:
        """Per corpus, the unreadable shards met so far by any worker (sorted uris)."""
        return [sorted(set().union(*(p["bad_shards"][c] for p in self.positions)))
                for c in range(len(self.shard_counts))]

    def _check_bad_shards(self) -> None:
        for names, count in zip(self.bad_shards(), self.shard_counts):
            limit = bad_shard_limit(self.max_bad_shards, count)
            if len(names) > limit:
                raise UnreadableShardsError(
                    f"{len(names)} shards of a corpus of {count} are unreadable (not tars, or truncated), more "
                    f"than the {limit} that data.max_bad_shards={self.max_bad_shards} allows: {', '.join(names)}. "
                    "Rewrite or remove them (`videofactory validate` checks a corpus), or raise data.max_bad_shards")

    def __iter__(self) -> ResumableLoader:
        return self

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is: pass it back as ``state`` to continue with the next unseen batch."""
        return {"next_worker": self.next_worker, "workers": copy.deepcopy(self.positions)}

    def skipped(self) -> dict[str, int]:
        """Samples skipped so far (too short, undecodable, in no bucket), samples delivered, over all workers, and
        the number of unreadable shards met (``bad_shards``, over all corpora)."""
        counts = {k: sum(p[k] for p in self.positions) for k in ("samples", "short", "bad", "no_bucket")}
        return {**counts, "bad_shards": sum(len(names) for names in self.bad_shards())}

    def bucket_counts(self) -> list[int]:
        """Samples delivered so far from each bucket of ``data.buckets``, over all workers ([] without buckets)."""
        return [sum(counts) for counts in zip(*(p["buckets"] for p in self.positions))]
