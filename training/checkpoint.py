"""Training checkpoints: one directory per step, written whole or not at all.

``<output>/checkpoints/step-00000100/`` holds ``model.safetensors`` and ``ema.safetensors`` (the
weights), ``state.pt`` (optimizer, step, RNG states, data positions: only tensors, ints, floats,
lists and dicts, so it loads with ``torch.load(weights_only=True)``) and ``config.yaml`` (the whole
training config, so sampling needs nothing else). The files are written into a hidden temporary
directory (``.step-00000100.<pid>.tmp``) that is renamed into place at the end: a crash never leaves
a checkpoint that looks whole. What a crash does leave, that temporary directory, is removed when the
next run starts (``remove_partial_checkpoints``), unless the process named in it is still alive.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file

from training.config import TrainConfig, load_config, save_config

MODEL_FILE, EMA_FILE, STATE_FILE, CONFIG_FILE = "model.safetensors", "ema.safetensors", "state.pt", "config.yaml"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_PARTIAL_DIR = re.compile(r"^\.step-\d{8}(?:\.(\d+))?\.tmp$")  # .step-<step>.<pid of its writer>.tmp


def checkpoints_root(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def checkpoint_dir(output: str | Path, step: int) -> Path:
    return checkpoints_root(output) / f"step-{step:08d}"


def list_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints under ``output``, oldest first."""
    root = checkpoints_root(output)
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name)] if root.is_dir() else []
    return sorted(found)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partial_checkpoints(output: str | Path) -> list[Path]:
    """Delete the temporary directories that interrupted checkpoint writes left under ``output``; return them.

    Checkpoints are written by one process (rank 0), so at the start of a run a temporary directory is
    an orphan, unless the pid in its name is a live process other than this one (another run writing
    into the same output: it is left alone). On storage shared between machines run it on one only.
    """
    root = checkpoints_root(output)
    removed = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        match = _PARTIAL_DIR.match(path.name)
        if not match or not path.is_dir():
            continue
        pid = int(match.group(1)) if match.group(1) else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the latest one of a training output directory."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"{path} is neither a checkpoint (no {STATE_FILE}) nor a training output "
                                "directory with checkpoints/step-*: train first with `videofactory train`")
    return found[-1]


def save_checkpoint(path: Path, weights: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                    state: dict[str, Any], cfg: TrainConfig) -> None:
    """Write the checkpoint atomically (temporary directory, then ``os.replace``). ``weights`` and ``ema`` are
    whole state dicts (a sharded run gathers them first), so every checkpoint loads into a plain model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.{os.getpid()}.tmp"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for tensors, name in ((weights, MODEL_FILE), (ema, EMA_FILE)):
        if tensors is not None:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial / name))
    torch.save(state, partial / STATE_FILE)
    save_config(cfg, partial / CONFIG_FILE)
    if path.exists():  # the same step saved again (a resumed run that stopped right after saving)
        shutil.rmtree(path)
    os.replace(partial, path)


def prune_checkpoints(output: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (0 keeps all)."""
    if keep > 0:
        for old in list_checkpoints(output)[:-keep]:
            shutil.rmtree(old)


def load_weights(path: Path, model: torch.nn.Module, ema: bool = False) -> None:
    """Load the model (or, with ``ema``, the EMA) weights of checkpoint ``path`` into ``model``."""
    if ema:
        if not (path / EMA_FILE).is_file():
            raise FileNotFoundError(f"{path} has no {EMA_FILE} (trained with optim.ema_decay 0): sample without EMA")
        model.load_state_dict(load_file(str(path / EMA_FILE)))
    else:
        load_model(model, str(path / MODEL_FILE))


def load_model_state(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of checkpoint ``path`` as a state dict (on the CPU)."""
    return load_file(str(path / MODEL_FILE))


def load_ema(path: Path) -> dict[str, torch.Tensor] | None:
    return load_file(str(path / EMA_FILE)) if (path / EMA_FILE).is_file() else None


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path / STATE_FILE, weights_only=True)


def load_checkpoint_config(path: Path, overrides: Iterable[str] = ()) -> TrainConfig:
    """The training config saved in checkpoint ``path``, with ``--set`` style ``overrides`` applied."""
    return load_config(path / CONFIG_FILE, overrides)
