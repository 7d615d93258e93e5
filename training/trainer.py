"""The training loop, nanoGPT-style: one plain loop, everything it does visible in one place.

Per optimizer step: ``grad_accumulation`` micro-batches are streamed (``training.data``), encoded by the
frozen VAE and text encoder, or drawn from the posteriors and caption embeddings precomputed by
``videofactory encode`` (``training.sidecars``; the same draws, so the same loss), captions dropped to ""
with ``caption_dropout`` so classifier-free guidance works; their diffusion loss back-propagated (bf16
autocast on CUDA, DDP syncing only on the last micro-batch; with ``distributed: fsdp`` FSDP2
reduce-scatters each micro-batch's gradients into the rank's shards); then gradients are clipped, AdamW
steps at the warm-up schedule's rate, and the EMA weights follow (with a warm-up of their decay,
``ema_decay``; of the shards under FSDP2). Every ``checkpoint_every`` steps rank 0 writes a checkpoint
holding everything needed to continue bit for bit: weights, EMA, optimizer (gathered whole under FSDP2),
step, RNG states and every rank's data position. Randomness comes from the global torch RNG (seeded per
rank and saved) and from the data stream's own seeded generators, so 2N steps equal
N steps + resume + N steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from training.checkpoint import (
    checkpoint_dir,
    list_checkpoints,
    load_ema,
    load_model_state,
    load_state,
    load_weights,
    prune_checkpoints,
    remove_partial_checkpoints,
    save_checkpoint,
)
from training.config import OptimConfig, TrainConfig
from training.data import ResumableLoader
from training.diffusion import diffusion_loss, make_scheduler
from training.distributed import (
    DistEnv,
    full_model_state,
    full_optimizer_state,
    full_tensors,
    gather,
    load_full_model_state,
    load_full_optimizer_state,
    mean_over_ranks,
    shard_like,
    shard_model,
)
from training.encoders import TextEncoder, VideoVAE
from training.model import VideoUNet
from training.model.blocks import Downsample, ResBlock, SpatioTemporalBlock, Upsample
from training.model.pretrained import load_2d_weights, read_2d_config, unet_config_from_2d
from training.sidecars import find_all

log = logging.getLogger("videofactory.train")


def build_unet(cfg: TrainConfig, text_hidden: int, latent_channels: int, latent_hw: tuple[int, int]) -> VideoUNet:
    """The U-Net of the config, checked against the encoders and the frame size it will see."""
    unet = cfg.model.unet
    if unet.cross_attention_dim != text_hidden:
        raise ValueError(f"model.unet.cross_attention_dim is {unet.cross_attention_dim} but the text encoder's "
                         f"hidden size is {text_hidden}: make them equal")
    if unet.in_channels != latent_channels:
        raise ValueError(f"model.unet.in_channels is {unet.in_channels} but the VAE has {latent_channels} latent "
                         "channels: make them equal")
    if any(n % unet.downsample_factor for n in latent_hw):
        raise ValueError(f"the latent of data.width x data.height is {latent_hw[1]}x{latent_hw[0]}, which the "
                         f"U-Net's {len(unet.block_channels)} levels cannot halve evenly: choose a size whose "
                         f"latent divides by {unet.downsample_factor}")
    return VideoUNet(unet)


def fsdp_units(model: VideoUNet) -> list[torch.nn.Module]:
    """The modules FSDP2 shards as units: the blocks ``VideoUNet.forward`` calls one after another (each ResBlock,
    transformer block and resampler; a ``UNetBlock`` only holds them and is never called, so it cannot gather
    their parameters). What is left (embeddings, ``conv_in``, ``conv_out``) belongs to the root."""
    return [m for m in model.modules() if isinstance(m, ResBlock | SpatioTemporalBlock | Downsample | Upsample)]


def check_buckets(cfg: TrainConfig, factor: int, world: int = 1) -> None:
    """Every bucket of ``data.buckets`` must give a latent that the VAE's ``factor`` and the U-Net's levels divide.

    On several ranks, single-frame buckets cannot sit beside video buckets: each rank yields whichever bucket
    fills first, and a T = 1 batch skips the temporal layers, so the ranks would reduce the gradients of
    different parameters (DDP stalls, FSDP's reduce-scatters no longer match).
    """
    frames = {b.frames for b in cfg.data.buckets}
    if world > 1 and 1 in frames and len(frames) > 1:
        raise ValueError("data.buckets mixes frames: 1 with video buckets, which ranks would train at different "
                         "steps; on several processes put images in a corpus with frames: 1 and no buckets (its "
                         "batches are drawn alike on every rank) or train them separately")
    for b in cfg.data.buckets:
        latent = (b.height // factor, b.width // factor)
        if b.width % factor or b.height % factor or any(n % cfg.model.unet.downsample_factor for n in latent):
            raise ValueError(f"data.buckets has {b.width}x{b.height}, whose latent the VAE (factor {factor}) and the "
                             f"U-Net's {len(cfg.model.unet.block_channels)} levels cannot halve evenly: choose sizes "
                             f"that divide by {factor * cfg.model.unet.downsample_factor}")


def learning_rate(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def ema_decay(decay: float, step: int, warmup: bool = True) -> float:
    """The EMA's decay at the update after optimizer step ``step`` (0 for the first update).

    With ``warmup``, ``min(decay, (1 + step) / (10 + step))`` (TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``; diffusers' ``EMAModel`` without ``use_ema_warmup`` has the same curve one update later):
    0.1 at step 0, 0.55 at step 10, 0.999 near step 9000, so the EMA follows the model early on instead of
    keeping its random initialisation (at a flat 0.9999, 0.9999 ** 20000 = 13 % of the EMA would still be the
    initial weights after 20k steps).
    """
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class EMA:
    """Exponential moving average of the model's floating-point state, kept in float32, starting from the
    model's current weights (the restored ones when a run resumes from a checkpoint without an EMA)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = decay, warmup
        self.state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        return ema_decay(self.decay, step, self.warmup)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move towards ``model``'s weights after optimizer step ``step`` (0 for the first)."""
        weight = 1 - self.decay_at(step)
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[key].lerp_(value.float(), weight)
            else:
                self.state[key].copy_(value)


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Builds everything from a config (resuming from the latest checkpoint in ``output`` if any) and trains."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, resume: bool = True) -> None:
        cfg.check()
        self.cfg, self.env = cfg, env
        self.text = TextEncoder(cfg.model.text_encoder, cfg.model.tokenizer, cfg.data.max_caption_tokens, env.device)
        self.vae = VideoVAE(cfg.model.vae, env.device)
        f = self.vae.downsample
        if cfg.data.width % f or cfg.data.height % f:
            raise ValueError(f"data.width and data.height must be multiples of the VAE's factor {f}")
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        if cfg.model.init_from:  # the spatial layout of a pretrained image U-Net (kept in every checkpoint's config)
            cfg.model.unet = unet_config_from_2d(read_2d_config(cfg.model.init_from), cfg.model.unet)
        self.model = build_unet(cfg, self.text.hidden_size, self.vae.channels,
                                (cfg.data.height // f, cfg.data.width // f)).to(env.device)
        if cfg.model.init_from and not (resume and list_checkpoints(cfg.output)):  # a resumed run has its weights
            report = load_2d_weights(self.model, cfg.model.init_from)
            log.info("initialised %d spatial tensors from %s; %d video-only tensors start as identities",
                     len(report.copied), cfg.model.init_from, len(report.video_only))
        self.model.set_gradient_checkpointing(cfg.gradient_checkpointing)
        # FSDP2 shards the parameters in place, before the optimizer is built on them (its state is then sharded
        # too) and before a checkpoint is restored into them; alone there is nothing to shard
        self.fsdp = cfg.distributed == "fsdp" and env.world > 1
        if self.fsdp:
            shard_model(self.model, fsdp_units(self.model), env, cfg.bf16)
        self.scheduler = make_scheduler(cfg.diffusion)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                           weight_decay=cfg.optim.weight_decay)
        self.step = 0
        torch.manual_seed(cfg.seed + env.rank)  # different noise, timesteps and dropout on each rank
        data_state, ema_state = None, None
        if env.main:  # rank 0 writes the checkpoints: what an interrupted write left is its to clear
            for partial in remove_partial_checkpoints(cfg.output):
                log.info("removed %s, left by an interrupted checkpoint write", partial)
        found = list_checkpoints(cfg.output) if resume else []
        if found:
            data_state, ema_state = self._restore(found[-1])
        # built after the restore: a checkpoint without an EMA (trained with ema_decay 0) resumes with an EMA
        # of its restored weights, not of the random initialisation
        self.ema = EMA(self.model, cfg.optim.ema_decay, cfg.optim.ema_warmup) if cfg.optim.ema_decay > 0 else None
        if self.ema is not None and ema_state is not None:
            self.ema.state = (shard_like(ema_state, self.ema.state) if self.fsdp
                              else {k: v.to(env.device) for k, v in ema_state.items()})
        elif self.ema is not None and found:
            log.warning("%s has no EMA weights: the EMA starts from its model weights", found[-1])
        check_buckets(cfg, f, env.world)
        self.loader = ResumableLoader(cfg.data, cfg.seed, env.rank, env.world, data_state, sidecars=find_all(cfg))
        self.empty_text: torch.Tensor | None = None  # the empty caption's embedding, for sidecar batches
        on_gpu = env.device.type == "cuda"
        self.ddp = (DistributedDataParallel(self.model, device_ids=[env.device.index] if on_gpu else None)
                    if env.world > 1 and not self.fsdp else None)
        network = self.ddp if self.ddp is not None else self.model
        # the whole model, sharded or not: under FSDP2 dynamo breaks the graph at each unit's gather and free
        # hooks, so each block compiles on its own while the checkpoints keep the plain parameter names
        self.network = torch.compile(network) if cfg.compile else network
        self.losses: list[float] = []

    def _restore(self, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        """Load checkpoint ``path``'s weights, optimizer, step and RNG; return this rank's data position and the
        checkpoint's EMA weights (None if it has none)."""
        state = load_state(path)
        if len(state["data"]) != self.env.world:
            raise ValueError(f"{path} was written by {len(state['data'])} ranks, this run has {self.env.world}: "
                             "resume with the same number of processes (or a new output directory)")
        if self.fsdp:  # every rank reads the whole files and keeps its shards
            load_full_model_state(self.model, load_model_state(path))
            load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            load_weights(path, self.model)
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        set_rng_state(state["rng"][self.env.rank])
        log.info("resumed from %s at step %d", path, self.step)
        return state["data"][self.env.rank], load_ema(path)

    def _autocast(self) -> contextlib.AbstractContextManager:
        on_gpu = self.env.device.type == "cuda" and self.cfg.bf16
        return torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()

    def _micro_step(self, last: bool) -> tuple[float, float, int]:
        """One micro-batch forward and backward: (loss, seconds waiting for data, samples)."""
        started = time.perf_counter()
        batch = next(self.loader)
        waited = time.perf_counter() - started
        latents, text = self._encode(batch)
        sync = contextlib.nullcontext() if last or self.ddp is None else self.ddp.no_sync()
        with sync:
            with self._autocast():
                fps = batch["fps"].to(latents.device) if self.cfg.model.unet.fps_conditioning else None
                loss = diffusion_loss(self.network, self.scheduler, latents, text, fps)
            (loss / self.cfg.optim.grad_accumulation).backward()
        return loss.item(), waited, latents.shape[0]

    def _encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's latents and caption embeddings (captions dropped to "" at ``caption_dropout``): encoded here,
        or drawn from the posteriors and embeddings of the sidecars, with the same draws from the global RNG."""
        if "video" in batch:
            latents = self.vae.encode(batch["video"])
            keep = torch.rand(len(batch["caption"])) >= self.cfg.diffusion.caption_dropout
            return latents, self.text([c if k else "" for c, k in zip(batch["caption"], keep.tolist())])
        latents = self.vae.sample(batch["latent_mean"], batch["latent_logvar"])
        keep = torch.rand(len(batch["caption"])) >= self.cfg.diffusion.caption_dropout
        if self.empty_text is None:
            self.empty_text = self.text([""])
        text = batch["text"].to(self.empty_text.device)
        return latents, torch.where(keep.to(text.device)[:, None, None], text, self.empty_text)

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns its loss, time waiting for data, total time and samples."""
        started = time.perf_counter()
        lr = learning_rate(self.step, self.cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accumulation = self.cfg.optim.grad_accumulation
        results = [self._micro_step(i == accumulation - 1) for i in range(accumulation)]
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return {"loss": sum(r[0] for r in results) / accumulation, "wait": sum(r[1] for r in results),
                "seconds": time.perf_counter() - started, "samples": sum(r[2] for r in results), "lr": lr}

    def save(self) -> None:
        """Write a checkpoint (rank 0), with every rank's RNG state and data position."""
        ranks_rng, ranks_data = gather(rng_state(), self.env), gather(self.loader.state_dict(), self.env)
        if self.fsdp:  # gathered whole on rank 0 (every rank takes part): the files of a DDP run
            weights, optimizer = full_model_state(self.model), full_optimizer_state(self.model, self.optimizer)
            ema = full_tensors(self.ema.state, self.env) if self.ema else None
        else:
            weights, optimizer = self.model.state_dict(), self.optimizer.state_dict()
            ema = self.ema.state if self.ema else None
        if self.env.main:
            state = {"step": self.step, "optimizer": optimizer, "rng": ranks_rng, "data": ranks_data}
            save_checkpoint(checkpoint_dir(self.cfg.output, self.step), weights, ema, state, self.cfg)
            prune_checkpoints(self.cfg.output, self.cfg.keep_checkpoints)
        if self.env.world > 1:
            torch.distributed.barrier()

    def train(self) -> list[float]:
        """Train up to ``cfg.steps``; return this rank's loss at every step it ran."""
        cfg, env = self.cfg, self.env
        writer = SummaryWriter(f"{cfg.output}/tensorboard") if env.main else None
        window: list[dict[str, float]] = []
        with logging_redirect_tqdm(), tqdm(total=cfg.steps, initial=self.step, disable=not env.main,
                                           desc="train", unit="step", dynamic_ncols=True) as bar:
            while self.step < cfg.steps:
                result = self.train_step()
                window.append(result)
                self.losses.append(result["loss"])
                bar.update(1)
                bar.set_postfix(loss=f"{result['loss']:.4f}", lr=f"{result['lr']:.2e}")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(window, writer)
                    window = []
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save()
                if cfg.eval.every and self.step % cfg.eval.every == 0:
                    self.evaluate(writer)
        if writer is not None:
            writer.close()
        return self.losses

    # --- periodic held-out evaluation (training.evaluate; eval.every, eval.corpus) ---------------------------
    def evaluate(self, writer: SummaryWriter | None) -> dict[str, Any] | None:
        """Evaluate a copy of the model (EMA weights with ``eval.use_ema``) on ``eval.corpus`` on rank 0, logged
        under ``eval/``; the model, the global RNG and the data stream are untouched, so resuming stays exact.
        Other ranks wait at a barrier (keep the evaluation shorter than the process group's timeout)."""
        results = None
        model, ema = self.model, self.ema.state if self.ema is not None else None
        if self.fsdp:  # rank 0 evaluates alone: a plain model of the gathered weights (every rank gathers)
            weights, ema = full_model_state(self.model), full_tensors(ema, self.env) if ema is not None else None
            model = self._plain_model(weights) if self.env.main else None
        if self.env.main:
            from training.evaluate import evaluate_in_training

            results, self._eval_clips = evaluate_in_training(
                model, ema, self.cfg, self.text, self.vae, self.step, writer, getattr(self, "_eval_clips", None),
                self._autocast)
        if self.env.world > 1:
            torch.distributed.barrier()
        return results

    def _plain_model(self, weights: dict[str, torch.Tensor]) -> VideoUNet:
        """An unsharded U-Net holding ``weights``, built on the meta device: no initialisation drawn from the
        global RNG (resuming stays exact) and no memory for weights that are replaced at once."""
        with torch.device("meta"):
            model = VideoUNet(self.cfg.model.unet)
        model.load_state_dict(weights, assign=True)
        return model.to(self.env.device)

    def _log(self, window: list[dict[str, float]], writer: SummaryWriter | None) -> None:
        """Loss, learning rate, samples/s, share of time waiting for data and GPU memory over the last steps."""
        seconds = sum(r["seconds"] for r in window)
        metrics = {
            "loss": mean_over_ranks(sum(r["loss"] for r in window) / len(window), self.env),
            "lr": window[-1]["lr"],
            "samples_per_s": sum(r["samples"] for r in window) * self.env.world / max(seconds, 1e-9),
            "data_wait_share": sum(r["wait"] for r in window) / max(seconds, 1e-9),
        }
        if self.env.device.type == "cuda":
            metrics["gpu_mem_gib"] = torch.cuda.max_memory_allocated(self.env.device) / 2**30
        skipped = self.loader.skipped()
        if writer is not None:
            for name, value in metrics.items():
                if math.isfinite(value):
                    writer.add_scalar(f"train/{name}", value, self.step)
            writer.add_scalar("data/skipped_short", skipped["short"], self.step)
            writer.add_scalar("data/skipped_bad", skipped["bad"], self.step)
            writer.add_scalar("data/bad_shards", skipped["bad_shards"], self.step)
            writer.add_scalar("data/skipped_no_bucket", skipped["no_bucket"], self.step)
            for bucket, count in enumerate(self.loader.bucket_counts()):
                writer.add_scalar(f"data/bucket_{bucket}", count, self.step)
            writer.flush()
        if self.env.main:
            log.info("step %d  %s  skipped: %d short, %d undecodable, %d in no bucket, %d unreadable shards%s",
                     self.step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()), skipped["short"],
                     skipped["bad"], skipped["no_bucket"], skipped["bad_shards"],
                     f"  samples per bucket: {self.loader.bucket_counts()}" if self.cfg.data.buckets else "")
