"""The trainer's configuration: one YAML file, read into dataclasses that refuse unknown keys.

``configs/train.yaml`` documents the paper-like defaults and ``configs/train_tiny.yaml`` a CPU-sized
run. The whole config is written into every checkpoint, so ``videofactory sample`` rebuilds the
same model, text encoder and VAE from the checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction"}  # our names -> diffusers' prediction_type


@dataclass
class CorpusConfig:
    """One corpus written by ``videofactory curate`` and its share of the training mix."""

    path: str = ""  # corpus root: a directory or an object-store prefix such as s3://bucket/corpus (holds shards/)
    weight: float = 1.0  # relative probability that the next sample comes from this corpus


@dataclass
class DataConfig:
    """Which clips, and how each becomes a training sample."""

    corpora: list[CorpusConfig] = field(default_factory=list)
    frames: int = 16  # T frames per sample
    stride: int | None = 4  # take every stride-th decoded frame (ignored when fps is set)
    fps: float | None = None  # or resample to this frame rate, whatever the clip's rate
    width: int = 512  # 16:9; the latent (width/8 x height/8) must divide by the U-Net's 2**(levels-1)
    height: int = 288
    batch_size: int = 1  # per rank and micro-step
    workers: int = 4  # DataLoader worker processes per rank (0: load in the training process)
    shuffle_buffer: int = 64  # samples held for shuffling, per worker and corpus
    max_caption_tokens: int | None = None  # None: the tokenizer's model_max_length
    # Unreadable shards (truncated, not a tar) are skipped and counted; past this many per corpus the run stops
    # naming them: a count (>= 1), or a share of the corpus's shards (< 1, rounded up: 0.02 tolerates 1 bad
    # shard in up to 50); 0: stop at the first.
    max_bad_shards: float = 0.02


@dataclass
class ModelConfig:
    """The trained U-Net and the frozen encoders around it."""

    unet: dict[str, Any] = field(default_factory=dict)  # UNetConfig fields (training.model.UNetConfig)
    text_encoder: str = ""  # local directory of a transformers CLIPTextModel (save_pretrained layout)
    tokenizer: str = ""  # local directory of its tokenizer
    vae: str = ""  # local directory of a diffusers AutoencoderKL


@dataclass
class DiffusionConfig:
    """The noise schedule and what the network predicts."""

    objective: str = "eps"  # eps | v
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"  # linear | scaled_linear (Stable Diffusion's)
    beta_start: float = 0.00085
    beta_end: float = 0.012
    zero_terminal_snr: bool = False  # rescale betas so the last step is pure noise (use with objective v)
    caption_dropout: float = 0.1  # share of captions replaced by "" so classifier-free guidance works


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 5e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    warmup_steps: int = 1000  # linear warm-up from 0, then constant
    grad_clip: float = 1.0  # max global grad norm (0: off)
    grad_accumulation: int = 1  # micro-batches per optimizer step
    ema_decay: float = 0.9999  # 0: no EMA


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 100_000  # optimizer steps
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # older step directories are deleted (0: keep all)
    log_every: int = 10
    output: str = "outputs/train"  # checkpoints/, tensorboard/
    seed: int = 0
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the U-Net

    def validate(self) -> None:
        """Raise ValueError saying what to fix."""
        d = self.data
        if not d.corpora:
            raise ValueError("no corpora: list at least one under data.corpora (path: CORPUS_DIR, weight: 1)")
        if any(c.weight <= 0 for c in d.corpora):
            raise ValueError("every data.corpora weight must be > 0")
        if d.frames < 1 or d.width < 1 or d.height < 1 or d.batch_size < 1 or d.workers < 0:
            raise ValueError("need data.frames, width, height, batch_size >= 1 and data.workers >= 0")
        if not isinstance(d.max_bad_shards, (int, float)) or d.max_bad_shards < 0:
            raise ValueError("data.max_bad_shards must be a number >= 0 (a count, or a share of the shards if < 1)")
        if d.fps is None and (d.stride is None or d.stride < 1):
            raise ValueError("set data.stride (>= 1) or data.fps")
        if self.diffusion.objective not in PREDICTION_TYPES:
            raise ValueError(f"diffusion.objective must be one of {sorted(PREDICTION_TYPES)}, "
                             f"not {self.diffusion.objective!r}")
        if not 0 <= self.diffusion.caption_dropout <= 1:
            raise ValueError("diffusion.caption_dropout must be in [0, 1]")
        if self.optim.grad_accumulation < 1 or self.steps < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("need optim.grad_accumulation, steps, checkpoint_every, log_every >= 1")
        for name in ("text_encoder", "tokenizer", "vae"):
            if not getattr(self.model, name):
                raise ValueError(f"model.{name} is empty: set it to a local directory (see configs/train.yaml)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``: nested dataclasses (and lists of them) recursively."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the config'} must be a mapping, not {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {where or 'top level'}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint, path = hints[name], f"{where}.{name}".strip(".")
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, path)
        elif item is not None and dataclasses.is_dataclass(item):
            kwargs[name] = [_build(item, v, f"{path}[{i}]") for i, v in enumerate(value or [])]
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A config from plain data (a parsed YAML file, a checkpoint's copy, or one shipped to a Ray worker)."""
    return _build(TrainConfig, data, "")


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML config; relative corpus and model paths are taken relative to the current directory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found (see configs/train.yaml and configs/train_tiny.yaml)")
    loaded = yaml.safe_load(path.read_text())
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    return config_from_dict(loaded or {})


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
