"""Sidecars: a corpus's VAE latents and caption embeddings, precomputed once (``videofactory encode``).

Layout, next to the corpus's ``shards/`` (or wherever ``data.corpora[].latents`` names)::

    latents/<digest>/spec.json              what they were made with (written first; the encode job checks it)
    latents/<digest>/shards/<shard>.tar     one sidecar shard per corpus shard, same name, same keys, same order
    latents/<digest>/shards/<shard>.json    that shard is done: the sha256 of the corpus shard it was made from
    latents/<digest>/meta.json              written last: the spec plus every shard's sha256 (finished sidecars)

Each sample of a sidecar shard is ``<key>.json`` (``bucket``, ``fps``, ``frames``: the frame indices taken,
``skipped``: null, or why the clip has no latents: ``short``, ``bad``, ``no_bucket``) and, unless skipped,
``<key>.safetensors`` with ``mean`` and ``logvar`` (T, C, h, w) float32, the VAE posterior of each frame
(unscaled), and ``text`` (L, D) float32, the caption's embedding. A skipped clip keeps its record, so a
sidecar shard holds exactly the samples of its corpus shard and the loader's shuffled stream (and the
data order of a run) is the same with sidecars as without.

Why the posterior and not a sampled latent: the trainer draws the latent from the posterior at every
step, as it does when it encodes on the fly (same draws from the same RNG), so the loss is the same; a
stored sample would fix one draw for the whole run. Why one frame choice per clip: the frames of a clip
are drawn at random on the fly, but a sidecar holds the frames it was encoded from, chosen per key
(``frame_choice``); a run over sidecars sees the same frames of a clip in every epoch. Open-Sora and
finetrainers make the same trade: encode once, train many times.

The spec is the encoders' identity (sha256 of every file of the VAE, text encoder and tokenizer
directories) and the settings that decide the tensors (frames, stride or fps, size or bucket table,
caption tokens); its digest names the directory. The trainer uses sidecars only when their spec is
its own and every shard is current (the sha256 of each corpus shard in the corpus manifest).
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from shards.hashing import file_sha256
from shards.reader import read_manifest
from storage import Location
from storage.location import translated
from training.config import CorpusConfig, DataConfig, ModelConfig, TrainConfig

log = logging.getLogger("videofactory.train")

SIDECARS_DIR = "latents"
SPEC_FILE = "spec.json"
META_FILE = "meta.json"
FORMAT = "videofactory-latents/1"
#: How the frames of a clip are chosen (part of the spec: another rule gives other latents).
FRAME_CHOICE = "random start seeded by key"


class SidecarError(ValueError):
    """Sidecars that cannot be used for this run (made with other encoders or settings, unfinished, stale)."""


def directory_sha256(path: str) -> str:
    """sha256 over every file of a local model directory (relative names and contents), in name order."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"model directory {path!r} not found")
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file_sha256(file).encode() + b"\0")
    return digest.hexdigest()


def encoder_identity(model: ModelConfig) -> dict[str, str]:
    """The VAE's, text encoder's and tokenizer's identity: the sha256 of their files (not their paths)."""
    return {name: directory_sha256(getattr(model, name)) for name in ("vae", "text_encoder", "tokenizer")}


def settings(data: DataConfig, corpus: CorpusConfig) -> dict[str, Any]:
    """The data settings that decide a corpus's latents and embeddings."""
    return {
        "frames": corpus.frames or data.frames, "stride": data.stride if data.fps is None else None, "fps": data.fps,
        "width": data.width, "height": data.height, "max_caption_tokens": data.max_caption_tokens,
        "buckets": [b.to_dict() | {"batch_size": None} for b in data.buckets],  # batch sizes do not change latents
        "frame_choice": FRAME_CHOICE,
    }


def make_spec(identity: dict[str, str], data: DataConfig, corpus: CorpusConfig) -> dict[str, Any]:
    """The spec of one corpus's sidecars (``spec.json``), its digest included."""
    spec = {"format": FORMAT, "encoders": identity, "settings": settings(data, corpus)}
    return {**spec, "digest": hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]}


def differences(made: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs between the spec sidecars were ``made`` with and the ``wanted`` one, in words."""
    diffs = [f"{name} (sha256 {made.get('encoders', {}).get(name, '?')[:12]}, this run's {sha[:12]})"
             for name, sha in wanted["encoders"].items() if made.get("encoders", {}).get(name) != sha]
    diffs += [f"data.{name} ({made.get('settings', {}).get(name)!r}, this run's {value!r})"
              for name, value in wanted["settings"].items() if made.get("settings", {}).get(name) != value]
    if made.get("format") != wanted["format"]:
        diffs.append(f"format ({made.get('format')!r}, this version reads {wanted['format']!r})")
    return diffs


def default_location(corpus_root: Location, digest: str) -> Location:
    return corpus_root / SIDECARS_DIR / digest


def corpus_shards(corpus_root: Location) -> dict[str, str]:
    """Every shard of the corpus by name, with the sha256 its manifest records."""
    try:
        manifest = read_manifest(corpus_root)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{corpus_root} has no manifest.json: is it a corpus written by "
                                "`videofactory curate`?") from exc
    return {entry["name"]: entry["sha256"] for entry in manifest.get("shards", [])}


def subdirectories(location: Location) -> list[Location]:
    """The directories directly under ``location`` (one listing, not a walk of every shard under them)."""
    with translated(location):
        infos = location.fs.get_file_info(pafs.FileSelector(location.path, allow_not_found=True))
    return sorted(location / posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


def read_json(location: Location) -> dict[str, Any] | None:
    try:
        return json.loads(location.read_text())
    except FileNotFoundError:
        return None


def find(cfg: TrainConfig, corpus: CorpusConfig, identity: dict[str, str] | None) -> Location | None:
    """The sidecars this run uses for ``corpus``, or None to encode it on the fly.

    With ``data.sidecars: auto`` and no explicit ``latents``, missing, unfinished or stale sidecars are logged
    and passed over; with an explicit ``latents`` directory or ``data.sidecars: require`` they are refused
    (``SidecarError`` saying what differs and what to run). Sidecars made with another spec are always refused.
    """
    from training.data import corpus_root  # here: training.data imports this module

    if cfg.data.sidecars == "off" or identity is None:
        return None
    root = corpus_root(corpus.path)
    spec = make_spec(identity, cfg.data, corpus)
    where = Location(corpus.latents) if corpus.latents else default_location(root, spec["digest"])
    strict = bool(corpus.latents) or cfg.data.sidecars == "require"
    encode_hint = f"run `videofactory encode --corpus {root} --config <this config>`"
    made = read_json(where / SPEC_FILE)
    if made is None:
        others = [d.name for d in subdirectories(root / SIDECARS_DIR)]
        message = f"no sidecars for {root} at {where}"
        if others:
            message += (f" (those in {root / SIDECARS_DIR}: {', '.join(others)} were made with other encoders or "
                        "settings)")
        if strict:
            raise SidecarError(f"{message}: {encode_hint}, or set data.sidecars: auto to encode on the fly")
        if others:
            log.warning("%s: encoding on the fly", message)
        return None
    diffs = differences(made, spec)
    if diffs:
        raise SidecarError(f"the sidecars at {where} were made with another {'; another '.join(diffs)}: {encode_hint} "
                           "for this config, or point data.corpora[].latents elsewhere")
    meta = read_json(where / META_FILE)
    current = corpus_shards(root)
    if meta is None or meta.get("shards") != current:
        what = "unfinished" if meta is None else "stale (the corpus's shards changed since)"
        if strict:
            raise SidecarError(f"the sidecars at {where} are {what}: {encode_hint} (it resumes)")
        log.warning("the sidecars at %s are %s: encoding %s on the fly", where, what, root)
        return None
    log.info("corpus %s: precomputed latents from %s", root, where)
    return where


def wanted_identity(cfg: TrainConfig) -> dict[str, str] | None:
    """The encoders' identity when this run might use sidecars (hashing the weights costs a read of them), else None."""
    from training.data import corpus_root

    if cfg.data.sidecars == "off":
        return None
    if cfg.data.sidecars == "auto" and not any(c.latents or (corpus_root(c.path) / SIDECARS_DIR).is_dir()
                                               for c in cfg.data.corpora):
        return None
    return encoder_identity(cfg.model)


def find_all(cfg: TrainConfig) -> list[str | None]:
    """Per corpus of ``cfg``, the uri of the sidecars to use (None: on the fly); see ``find``."""
    identity = wanted_identity(cfg)
    return [None if (where := find(cfg, c, identity)) is None else where.uri for c in cfg.data.corpora]
