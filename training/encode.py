"""The encode job: each clip's VAE posterior and caption embedding, once, into sidecar shards.

``videofactory encode --corpus DIR --config train.yaml`` (``jobs/encode.py``) runs ``encode_corpus``: the
corpus's shards not yet encoded become the rows of a Ray Data dataset, and a pool of ``ShardEncoder``
actors (a callable class: the frozen encoders load once per actor, on a GPU each when the cluster has
GPUs, else on CPUs) turns each into its sidecar shard (layout and format: ``training.sidecars``).

Resuming is by shard: a sidecar shard is written whole (atomically) and then its record
``<shard>.json``, which names the sha256 of the corpus shard it was made from; a rerun encodes only the
shards without a current record, so nothing is encoded twice (a shard rewritten by an incremental
curation run is encoded again). ``meta.json`` is written when every shard is done: the trainer uses
sidecars only then. The frames of a clip are decoded, sized and (with buckets) placed exactly as the
trainer's loader does, from a start chosen per key.
"""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import safetensors.torch
import torch

from shards.layout import SHARDS_DIR
from shards.reader import shard_samples
from storage import Location
from storage.scratch import scratch_dir
from training.buckets import BucketTable
from training.config import CorpusConfig, TrainConfig, config_from_dict
from training.data import ClipSpec, corpus_root, decode_clip_with_fps
from training.encoders import TextEncoder, VideoVAE
from training.sidecars import (
    META_FILE,
    SPEC_FILE,
    SidecarError,
    corpus_shards,
    default_location,
    differences,
    encoder_identity,
    make_spec,
    read_json,
)

log = logging.getLogger("videofactory.encode")


def record_location(where: Location, shard: str) -> Location:
    """The record that says sidecar shard ``shard`` is done."""
    return where / SHARDS_DIR / (shard.removesuffix(".tar") + ".json")


@dataclass
class Plan:
    """What one corpus's encode job does: where its sidecars go, with what spec, and which shards are left."""

    corpus: CorpusConfig
    root: Location
    where: Location
    spec: dict[str, Any]
    shards: dict[str, str]  # every corpus shard by name: its sha256
    todo: list[str]  # names of the shards to encode


def plan(cfg: TrainConfig, corpus: CorpusConfig, out: str | None = None) -> Plan:
    """Check (or write) the sidecars' spec and list the shards without a current record.

    Raises ``SidecarError`` when the output already holds sidecars made with another spec.
    """
    root = corpus_root(corpus.path)
    spec = make_spec(encoder_identity(cfg.model), cfg.data, corpus)
    where = Location(out or corpus.latents or default_location(root, spec["digest"]).uri)
    made = read_json(where / SPEC_FILE)
    if made is not None and (diffs := differences(made, spec)):
        raise SidecarError(f"{where} holds sidecars made with another {'; another '.join(diffs)}: choose another "
                           "output (--out), or remove it")
    if made is None:
        (where / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
    shards = corpus_shards(root)
    meta = read_json(where / META_FILE)
    if meta is not None and meta.get("shards") == shards:  # finished and current: not one record to read
        return Plan(corpus, root, where, spec, shards, [])
    todo = [name for name, sha in shards.items()
            if (read_json(record_location(where, name)) or {}).get("source_sha256") != sha]
    return Plan(corpus, root, where, spec, shards, todo)


class ClipEncoder:
    """One clip of a corpus shard -> the members of its sidecar sample (``training.sidecars``)."""

    def __init__(self, cfg: TrainConfig, corpus: CorpusConfig, device: str | torch.device) -> None:
        self.text = TextEncoder(cfg.model.text_encoder, cfg.model.tokenizer, cfg.data.max_caption_tokens, device)
        self.vae = VideoVAE(cfg.model.vae, device)
        self.spec, self.table = ClipSpec.of(cfg.data, corpus.frames), BucketTable.of(cfg.data)
        self.frames = corpus.frames

    def __call__(self, sample: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, Any]]:
        """The sidecar members (``json``, ``safetensors`` unless skipped) of one raw corpus sample, and its record."""
        key = sample["__key__"]
        record: dict[str, Any] = {"bucket": None, "fps": None, "skipped": None}
        spec = self.spec
        if self.table is not None:
            try:
                record["bucket"] = self.table.assign(json.loads(sample["json"]), self.frames)
            except (KeyError, ValueError):
                record["skipped"] = "bad"
            if record["bucket"] is None and not record["skipped"]:
                record["skipped"] = "no_bucket"
            if record["bucket"] is not None:
                b = self.table[record["bucket"]]
                spec = ClipSpec(b.frames, spec.stride, spec.fps, b.width, b.height)
        decoded = None
        if not record["skipped"]:
            try:
                decoded = decode_clip_with_fps(sample["mp4"], spec, random.Random(f"latents/{key}"))
            except (av.FFmpegError, IndexError, KeyError) as exc:
                log.warning("sample %s does not decode (%s): recorded as bad", key, exc)
                record["skipped"] = "bad"
            else:
                record["skipped"] = "short" if decoded is None else None
        members = {"txt": sample.get("txt", b"")}
        if decoded is not None:
            frames, record["fps"] = decoded
            mean, logvar = self.vae.posterior(torch.from_numpy(frames)[None])
            caption = sample.get("txt", b"").decode("utf-8").strip()
            members["safetensors"] = safetensors.torch.save({
                "mean": mean[0].float().cpu().contiguous(), "logvar": logvar[0].float().cpu().contiguous(),
                "text": self.text([caption])[0].float().cpu().contiguous()})
        members["json"] = json.dumps(record, sort_keys=True).encode()
        return members, record


def write_tar(path: Path, samples: Iterator[tuple[str, dict[str, bytes]]]) -> None:
    """A tar of ``(key, {ext: bytes})`` samples, members in order, mtime 0 (same input, same bytes)."""
    with open(path, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))


def encode_shard(encode: ClipEncoder, shard: Location, where: Location, source_sha256: str) -> dict[str, Any]:
    """Encode one corpus shard into its sidecar shard, then write its record; return the record.

    A corpus shard that is not a readable tar keeps the samples before its damage (as the loader does) and
    says so in the record (``damaged``).
    """
    started = time.perf_counter()
    counts: Counter = Counter()
    buckets: Counter = Counter()
    damaged = None

    def sidecar_samples() -> Iterator[tuple[str, dict[str, bytes]]]:
        nonlocal damaged
        try:
            for sample in shard_samples([shard]):
                members, record = encode(sample)
                counts[record["skipped"] or "encoded"] += 1
                if record["bucket"] is not None and not record["skipped"]:
                    buckets[str(record["bucket"])] += 1
                yield sample["__key__"], members
        except tarfile.TarError as exc:
            log.warning("corpus shard %s is not a readable tar past its first %d samples (%s)", shard,
                        sum(counts.values()), exc)
            damaged = str(exc)

    with scratch_dir("encode") as scratch:
        write_tar(scratch / shard.name, sidecar_samples())
        (where / SHARDS_DIR / shard.name).upload_from(scratch / shard.name)
    record = {"shard": shard.name, "source_sha256": source_sha256, "samples": sum(counts.values()),
              "counts": dict(sorted(counts.items())), "buckets": dict(sorted(buckets.items())), "damaged": damaged,
              "seconds": round(time.perf_counter() - started, 3)}
    record_location(where, shard.name).write_text(json.dumps(record, sort_keys=True))
    return record


class ShardEncoder:
    """Ray Data's callable class: the encoders load once per actor, then each call encodes shards (``shard`` rows)."""

    def __init__(self, config: dict[str, Any], corpus: dict[str, Any], where: str, shards: dict[str, str]) -> None:
        cfg = config_from_dict(config)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encode = ClipEncoder(cfg, CorpusConfig.from_dict(corpus), device)
        self.root, self.where, self.shards = corpus_root(CorpusConfig.from_dict(corpus).path), Location(where), shards

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        records = [encode_shard(self.encode, self.root / SHARDS_DIR / str(name), self.where, self.shards[str(name)])
                   for name in batch["shard"]]
        return {"record": [json.dumps(r) for r in records]}


#: Runs the encoder over a plan's shards and returns their records: ``run_on_ray`` or ``run_here``.
Runner = Callable[[TrainConfig, Plan], list[dict[str, Any]]]


def run_here(cfg: TrainConfig, work: Plan) -> list[dict[str, Any]]:
    """One encoder in this process, shard after shard (tests, and machines without Ray)."""
    encoder = ShardEncoder(cfg.to_dict(), work.corpus.to_dict(), work.where.uri, work.shards)
    return [json.loads(r) for name in work.todo for r in encoder({"shard": np.array([name])})["record"]]


def run_on_ray(cfg: TrainConfig, work: Plan, actors: int | None = None) -> list[dict[str, Any]]:
    """A pool of ``ShardEncoder`` actors on the connected Ray cluster: one GPU each when it has GPUs (``actors``
    defaults to their number), else CPU actors (default 1: torch already uses every core of a node)."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = actors or max(1, gpus)
    ray.data.DataContext.get_current().raise_original_map_exception = True
    dataset = ray.data.from_items([{"shard": name} for name in work.todo], override_num_blocks=len(work.todo))
    dataset = dataset.map_batches(
        ShardEncoder, batch_size=1, concurrency=min(actors, len(work.todo)), num_gpus=1 if gpus else None,
        fn_constructor_kwargs={"config": cfg.to_dict(), "corpus": work.corpus.to_dict(), "where": work.where.uri,
                               "shards": work.shards})
    return [json.loads(row["record"]) for row in dataset.iter_rows()]


def encode_corpus(cfg: TrainConfig, corpus: CorpusConfig, runner: Runner = run_here,
                  out: str | None = None) -> dict[str, Any]:
    """Encode what is left of ``corpus`` and, once every shard is done, write ``meta.json``; return it with
    ``encoded_now`` (the shards this run encoded)."""
    work = plan(cfg, corpus, out)
    log.info("%s: %d of %d shards to encode into %s", work.root, len(work.todo), len(work.shards), work.where)
    done = runner(cfg, work) if work.todo else []
    meta = read_json(work.where / META_FILE)
    if work.todo or meta is None or meta.get("shards") != work.shards:
        records = [read_json(record_location(work.where, name)) or {} for name in work.shards]
        missing = [name for name, r in zip(work.shards, records) if r.get("source_sha256") != work.shards[name]]
        if missing:
            raise RuntimeError(f"{len(missing)} shards of {work.root} were not encoded ({', '.join(missing[:5])}): "
                               "rerun the job (it resumes)")
        counts: Counter = Counter()
        buckets: Counter = Counter()
        for r in records:
            counts.update(r["counts"])
            buckets.update(r["buckets"])
        meta = {**work.spec, "corpus": work.root.uri, "shards": work.shards, "counts": dict(sorted(counts.items())),
                "buckets": dict(sorted(buckets.items(), key=lambda kv: int(kv[0]))),
                "damaged": {r["shard"]: r["damaged"] for r in records if r.get("damaged")}}
        (work.where / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return {**meta, "where": work.where.uri, "encoded_now": [r["shard"] for r in done]}
