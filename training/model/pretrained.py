"""Initialise a ``VideoUNet`` from a pretrained image U-Net (diffusers ``UNet2DConditionModel``).

VideoFactory extends a pretrained text-to-image latent diffusion model; its "spatial operations are
inherited". ``VideoUNet`` has Stable Diffusion's U-Net layout applied per frame (same levels, channels, time
embedding, ResNet blocks, transformers, resamplers, skip order), so every 2D tensor has exactly one place in
it. ``load_2d_weights`` copies them there by name, and the layers that exist only in the video model (the
temporal convolutions, the temporal transformers, the cross-stream fusion layers) are reset to identities
(zeroed output layers). At that point the video U-Net run on T frames equals the image U-Net run on each
frame (``tests/test_pretrained_init.py`` checks it for every attention variant).

Nothing is downloaded: the source is a local directory (``save_pretrained`` layout: ``config.json`` and
``diffusion_pytorch_model.safetensors``), such as ``stable-diffusion-2-1-base/unet``, read with
``local_files_only=True`` and safetensors only (no pickle).

The name mapping (2D -> video), per block ``down_blocks.i`` -> ``down.i``, ``mid_block`` -> ``mid``,
``up_blocks.i`` -> ``up.i``:

=========================================================  ==============================================
``time_embedding.linear_1`` / ``linear_2``                 ``time_embed.0`` / ``time_embed.2``
``conv_in``, ``conv_norm_out``, ``conv_out``               ``conv_in``, ``norm_out``, ``conv_out``
``resnets.j.{norm1,conv1,norm2,conv2}``                    the same names
``resnets.j.time_emb_proj``, ``resnets.j.conv_shortcut``   ``resnets.j.time_proj``, ``resnets.j.skip``
``attentions.j.{norm,proj_in,proj_out}``                   ``transformers.j.spatial.{norm,proj_in,proj_out}``
``attentions.j.transformer_blocks.0.norm1`` / ``attn1``    ``transformers.j.spatial.norm_attn`` / ``self_attn``
``... .norm2`` / ``attn2``                                 ``transformers.j.spatial.norm_text`` / ``text_attn``
``... .norm3`` / ``ff.net.0.proj`` / ``ff.net.2``          ``... .norm_ff`` / ``ff.proj_in`` / ``ff.proj_out``
``attn*.to_out.0``                                         ``*.to_out``
``downsamplers.0.conv`` / ``upsamplers.0.conv``            ``resample.conv``
=========================================================  ==============================================

1x1-convolution projections (``use_linear_projection: false``, Stable Diffusion 1.x) become the equivalent
linear weights. Video-only tensors are those under a ``.temporal.`` or ``.fusion.`` module.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from training.model.config import UNetConfig

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

    from training.model.unet import VideoUNet

#: ``UNetConfig`` fields that come from the 2D model; the others (attention variant, window, temporal layers,
#: dropout...) are the video model's own and come from ``model.unet``.
GEOMETRY_FIELDS: tuple[str, ...] = ("in_channels", "out_channels", "block_channels", "layers_per_block",
                                    "attention_levels", "attention_head_dim", "cross_attention_dim",
                                    "norm_num_groups")

#: A video-only tensor: a parameter of a temporal convolution / temporal transformer, a fusion layer or the fps
#: embedding.
VIDEO_ONLY = re.compile(r"(^|\.)(temporal|fusion|fps_embed)\.")

# (pattern, replacement) applied in order to every 2D name (``re.sub``).
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^time_embedding\.linear_1\.", "time_embed.0."),
    (r"^time_embedding\.linear_2\.", "time_embed.2."),
    (r"^conv_norm_out\.", "norm_out."),
    (r"^down_blocks\.(\d+)\.", r"down.\1."),
    (r"^up_blocks\.(\d+)\.", r"up.\1."),
    (r"^mid_block\.", "mid."),
    (r"\.resnets\.(\d+)\.time_emb_proj\.", r".resnets.\1.time_proj."),
    (r"\.resnets\.(\d+)\.conv_shortcut\.", r".resnets.\1.skip."),
    (r"\.attentions\.(\d+)\.transformer_blocks\.0\.norm1\.", r".transformers.\1.spatial.norm_attn."),
    (r"\.attentions\.(\d+)\.transformer_blocks\.0\.attn1\.", r".transformers.\1.spatial.self_attn."),
    (r"\.attentions\.(\d+)\.transformer_blocks\.0\.norm2\.", r".transformers.\1.spatial.norm_text."),
    (r"\.attentions\.(\d+)\.transformer_blocks\.0\.attn2\.", r".transformers.\1.spatial.text_attn."),
    (r"\.attentions\.(\d+)\.transformer_blocks\.0\.norm3\.", r".transformers.\1.spatial.norm_ff."),
    (r"\.attentions\.(\d+)\.transformer_blocks\.0\.ff\.net\.0\.proj\.", r".transformers.\1.spatial.ff.proj_in."),
    (r"\.attentions\.(\d+)\.transformer_blocks\.0\.ff\.net\.2\.", r".transformers.\1.spatial.ff.proj_out."),
    (r"\.attentions\.(\d+)\.(norm|proj_in|proj_out)\.", r".transformers.\1.spatial.\2."),
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.(downsamplers|upsamplers)\.0\.conv\.", ".resample.conv."),
)

# 2D config values the video U-Net reproduces; anything else is refused (key -> allowed values).
_REQUIRED: dict[str, tuple[Any, ...]] = {
    "center_input_sample": (False,),
    "flip_sin_to_cos": (True,),
    "freq_shift": (0,),
    "mid_block_type": ("UNetMidBlock2DCrossAttn",),
    "only_cross_attention": (False,),
    "downsample_padding": (1,),
    "mid_block_scale_factor": (1,),
    "act_fn": ("silu",),
    "norm_eps": (1e-5,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "num_attention_heads": (None,),
    "dual_cross_attention": (False,),
    "class_embed_type": (None,),
    "addition_embed_type": (None,),
    "num_class_embeds": (None,),
    "resnet_time_scale_shift": ("default",),
    "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1,),
    "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,),
    "conv_in_kernel": (3,),
    "conv_out_kernel": (3,),
    "projection_class_embeddings_input_dim": (None,),
    "attention_type": ("default",),
    "class_embeddings_concat": (False,),
    "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,),
    "reverse_transformer_layers_per_block": (None,),
}
_DOWN = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}


class PretrainedMappingError(ValueError):
    """A 2D U-Net that cannot be mapped into ``VideoUNet``; the message says what and why."""


def _per_level(value: Any, n: int, name: str, problems: list[str]) -> list[Any]:
    """An int-or-list config value as one value per level."""
    if isinstance(value, list | tuple):
        if len(value) != n:
            problems.append(f"{name} has {len(value)} entries for {n} levels")
            return [value[0]] * n
        return list(value)
    return [value] * n


def _one_value(values: list[Any], name: str, problems: list[str]) -> Any:
    if len(set(values)) != 1:
        problems.append(f"{name} differs between levels ({values}); the video U-Net has one value for all levels")
    return values[0]


def _full_2d_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The 2D config with diffusers' defaults for keys the file leaves out (older files lack newer keys)."""
    from diffusers import UNet2DConditionModel

    defaults = {name: p.default for name, p in inspect.signature(UNet2DConditionModel.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in config.items() if not k.startswith("_")}}


def unet_config_from_2d(config2d: Mapping[str, Any], video: UNetConfig | None = None) -> UNetConfig:
    """The ``UNetConfig`` whose spatial layers are those of the 2D U-Net of ``config2d`` (its ``config.json``),
    with the video-only fields of ``video`` (default: ``UNetConfig``'s).

    Raises ``PretrainedMappingError`` listing every 2D setting the video U-Net cannot reproduce, and every
    geometry field that ``video`` sets explicitly to a value other than the 2D model's.
    """
    class_name = config2d.get("_class_name", "UNet2DConditionModel")
    if class_name != "UNet2DConditionModel":
        raise PretrainedMappingError(f"model.init_from must be a diffusers UNet2DConditionModel directory, its "
                                     f"config.json names {class_name!r}")
    cfg = _full_2d_config(config2d)
    problems = [f"{key}={cfg.get(key)!r} (supported: {', '.join(repr(v) for v in allowed)})"
                for key, allowed in _REQUIRED.items()
                if not all(v in allowed for v in (cfg.get(key) if isinstance(cfg.get(key), list | tuple)
                                                  else [cfg.get(key)]))]  # per-level lists: every entry
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    n = len(down)
    chans = [int(c) for c in cfg["block_out_channels"]]
    if len(chans) != n:
        problems.append(f"block_out_channels has {len(chans)} entries for {n} down blocks")
    bad = [t for t in down if t not in _DOWN] + [t for t in up if t not in _UP]
    if bad:
        problems.append(f"block types {sorted(set(bad))} (supported: {', '.join([*_DOWN, *_UP])})")
    levels = [_DOWN.get(t, False) for t in down]
    if not bad and [_UP[t] for t in up] != levels[::-1]:
        problems.append(f"up_block_types {up} do not mirror down_block_types {down}")
    layers = _one_value(_per_level(cfg["layers_per_block"], n, "layers_per_block", problems),
                        "layers_per_block", problems)
    transformer_layers = _per_level(cfg["transformer_layers_per_block"], n, "transformer_layers_per_block", problems)
    if any(t != 1 for t in transformer_layers):
        problems.append(f"transformer_layers_per_block={cfg['transformer_layers_per_block']!r} (supported: 1)")
    cross = _one_value(_per_level(cfg["cross_attention_dim"], n, "cross_attention_dim", problems),
                       "cross_attention_dim", problems)
    # diffusers' ``attention_head_dim`` is, for this class, the number of heads (its docs call the naming a
    # historical mistake); each level's head width is channels // heads. The video U-Net has one head width.
    heads = _per_level(cfg["attention_head_dim"], n, "attention_head_dim", problems)
    widths = {}
    for level, (c, h) in enumerate(zip(chans, heads, strict=False)):
        if levels[level] or level == n - 1:  # levels with transformers, and the middle block (deepest level)
            if h is None or c % h:
                problems.append(f"level {level}: {c} channels do not split into {h} heads")
            else:
                widths[level] = c // h
    if len(set(widths.values())) > 1:
        problems.append(f"head widths (channels // attention_head_dim) differ between levels ({widths}); the "
                        f"video U-Net has one head width (Stable Diffusion 2.x: 64 at every level)")
    if cfg.get("norm_num_groups") is None:
        problems.append("norm_num_groups=None (supported: a number of GroupNorm groups)")
    if problems:
        raise PretrainedMappingError("cannot map this UNet2DConditionModel into VideoUNet:\n  - "
                                     + "\n  - ".join(problems))

    geometry = dict(in_channels=cfg["in_channels"], out_channels=cfg["out_channels"], block_channels=tuple(chans),
                    layers_per_block=layers, attention_levels=tuple(levels),
                    attention_head_dim=next(iter(widths.values())), cross_attention_dim=cross,
                    norm_num_groups=cfg["norm_num_groups"])
    video = video if video is not None else UNetConfig()
    # A geometry field written in the video config must agree (unset ones are simply taken from the 2D model).
    levels_default = tuple(i < n - 1 or n == 1 for i in range(n))
    conflicts = []
    for name, value in geometry.items():
        mine = getattr(video, name)
        if name == "attention_levels" and mine is None:
            mine = levels_default  # None means the default layout
        if name in video.model_fields_set and _plain(mine) != _plain(value):
            conflicts.append(f"model.unet.{name}={_plain(mine)} but the 2D U-Net has {_plain(value)}")
    if conflicts:
        raise PretrainedMappingError("model.init_from sets the U-Net's spatial layout, and model.unet disagrees: "
                                     + "; ".join(conflicts) + ". Remove these keys from model.unet (or make them "
                                     "equal); with init_from it only supplies the video-specific fields")
    data = video.to_dict()
    data.update({k: list(v) if isinstance(v, tuple) else v for k, v in geometry.items()})
    return UNetConfig.from_dict(data, source="model.unet (from model.init_from)")


def _layout(config: UNetConfig) -> dict[str, Any]:
    """The geometry fields of ``config`` as plain values, default attention levels resolved."""
    layout = {name: _plain(getattr(config, name)) for name in GEOMETRY_FIELDS}
    layout["attention_levels"] = _plain(config.levels_with_attention)
    return layout


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _check_local_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.init_from={str(path)!r} is not a local diffusers UNet2DConditionModel "
                                f"directory (no config.json): it is never downloaded. Download once, e.g. "
                                f"`hf download stabilityai/stable-diffusion-2-1-base --include 'unet/*' "
                                f"--local-dir models/stable-diffusion-2-1-base`, and point it at .../unet")
    return path


def read_2d_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local ``UNet2DConditionModel`` directory (no weights read)."""
    from diffusers import UNet2DConditionModel

    return dict(UNet2DConditionModel.load_config(str(_check_local_dir(path)), local_files_only=True))


def load_unet2d(path: str | Path) -> UNet2DConditionModel:
    """The 2D U-Net of a local directory, float32, from safetensors only (never downloaded, never unpickled)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(_check_local_dir(path)), local_files_only=True,
                                                use_safetensors=True, torch_dtype=torch.float32)


def video_name(name2d: str) -> str:
    """The ``VideoUNet`` state-dict key of a ``UNet2DConditionModel`` key (see the module's table)."""
    for pattern, replacement in _RENAMES:
        name2d = re.sub(pattern, replacement, name2d)
    return name2d


@dataclass
class LoadReport:
    """What ``load_2d_weights`` did."""

    copied: dict[str, str] = field(default_factory=dict)
    """2D name -> video name of every tensor copied."""
    video_only: list[str] = field(default_factory=list)
    """Video tensors no 2D tensor maps to (temporal and fusion layers), left as constructed."""
    reset_layers: list[str] = field(default_factory=list)
    """Video-only modules reset to the identity."""


def map_2d_state_dict(state2d: Mapping[str, torch.Tensor], video_state: Mapping[str, torch.Tensor]
                      ) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Rename (and, for 1x1-convolution projections, reshape) the 2D tensors into video keys.

    Returns (video key -> tensor, 2D key -> video key, video keys left unmapped). Raises
    ``PretrainedMappingError`` when a 2D tensor has no place, two map to one place, a shape differs, or a
    video tensor that is not video-only is left without a 2D tensor.
    """
    problems: list[str] = []
    mapped: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    for key, tensor in state2d.items():
        target = video_name(key)
        if target not in video_state:
            problems.append(f"2D tensor {key} has no place in the video U-Net (mapped to {target})")
            continue
        if target in mapped:
            problems.append(f"2D tensors {names_of(names, target)} and {key} both map to {target}")
            continue
        want = video_state[target].shape
        if tensor.shape != want and tensor.ndim == 4 and tensor.shape[2:] == (1, 1) and tensor.shape[:2] == want:
            tensor = tensor[:, :, 0, 0]  # a 1x1 convolution projection is the same map as a linear one
        if tensor.shape != want:
            problems.append(f"{key} {tuple(tensor.shape)} -> {target} {tuple(want)}: shapes differ")
            continue
        mapped[target], names[key] = tensor, target
    unmapped = [k for k in video_state if k not in mapped]
    missing = [k for k in unmapped if not VIDEO_ONLY.search(k)]
    if missing:
        problems.append(f"{len(missing)} spatial tensors of the video U-Net get no 2D weight: {', '.join(missing)}")
    if problems:
        raise PretrainedMappingError("the 2D U-Net's weights do not map one to one onto the video U-Net:\n  - "
                                     + "\n  - ".join(problems))
    return mapped, names, unmapped


def names_of(names: Mapping[str, str], target: str) -> str:
    return ", ".join(k for k, v in names.items() if v == target)


def reset_video_layers(model: nn.Module) -> list[str]:
    """Reset every video-only layer (temporal convolutions and transformers, fusion layers) to the identity
    by zeroing its output layer; returns their module names."""
    reset = []
    for name, module in model.named_modules():
        if VIDEO_ONLY.search(name + ".") and hasattr(module, "reset_to_identity"):
            module.reset_to_identity()
            reset.append(name)
    return reset


@torch.no_grad()
def load_2d_weights(model: VideoUNet, source: str | Path | nn.Module) -> LoadReport:
    """Copy a pretrained ``UNet2DConditionModel`` (a local directory or the module itself) into ``model`` and
    reset its video-only layers to identities, so that ``model`` on T frames equals the 2D U-Net per frame.

    Every 2D tensor must be used and every spatial tensor of ``model`` covered (``PretrainedMappingError``
    lists the ones that are not). ``model``'s config must have the 2D model's layout (``unet_config_from_2d``).
    """
    unet2d = load_unet2d(source) if isinstance(source, str | Path) else source
    expected = unet_config_from_2d(dict(unet2d.config), model.config)
    if _layout(model.config) != _layout(expected):
        raise PretrainedMappingError(f"the video U-Net's layout {_layout(model.config)} is not the 2D U-Net's "
                                     f"{_layout(expected)}; build it from unet_config_from_2d(...)")
    video_state = model.state_dict()
    mapped, names, unmapped = map_2d_state_dict(unet2d.state_dict(), video_state)
    for key, tensor in mapped.items():
        video_state[key].copy_(tensor)
    return LoadReport(copied=names, video_only=unmapped, reset_layers=reset_video_layers(model))


def video_unet_from_2d(source: str | Path | nn.Module, video: UNetConfig | None = None) -> VideoUNet:
    """A ``VideoUNet`` with the spatial layout and weights of a 2D U-Net (a local directory or the module) and
    the video-only settings of ``video``; its temporal and fusion layers start as identities."""
    from training.model.unet import VideoUNet

    unet2d = load_unet2d(source) if isinstance(source, str | Path) else source
    config = unet_config_from_2d(dict(unet2d.config), video)
    config.extra = {**config.extra, "init_from": str(source) if isinstance(source, str | Path) else "<module>"}
    model = VideoUNet(config)
    load_2d_weights(model, unet2d)
    return model
