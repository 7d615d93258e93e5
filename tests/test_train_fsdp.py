"""FSDP2 (``distributed: fsdp``) with 2 processes on CPU under torchrun: gloo runs FSDP2's all-gathers and
reduce-scatters in this torch, so the sharded run is the real one, not a world of one.

Five runs of the real loop on one corpus, with the same seeds and data order: DDP for 4 steps; FSDP with
gradient checkpointing for 4 steps, evaluating on a held-out corpus every 2 steps; FSDP for 2 steps, then
resumed to 4 by FSDP and, from a copy of the same checkpoint, by DDP. What they pin down:

- sharding is right: FSDP's losses, weights, EMA and AdamW state equal DDP's (float tolerance: the gradient
  reduction adds in another order);
- an FSDP run resumes exactly: 2 + resume + 2 steps give the 4-step run's losses bit for bit (so the periodic
  evaluation, which gathers the weights, left the model, the RNG and the data stream alone);
- its checkpoints are a DDP run's files: DDP resumes from one, and ``sample`` loads one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from demo.tiny_training import make_tiny_pretrained
from tests.test_train_distributed import free_port
from tests.train_corpus import write_corpus
from training.checkpoint import checkpoint_dir, load_state
from training.config import config_from_dict, load_config, save_config
from training.sample import generate

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # torch.testing.assert_close's; pytest.approx's below
APPROX = {"rel": 1e-4, "abs": 1e-5}


def torchrun(config: dict[str, Any], path: Path) -> list[list[float]]:
    """Run the loop of ``config`` in 2 processes; return each rank's loss at every step it ran."""
    save_config(config_from_dict(config), path)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
               "127.0.0.1", "--master-port", str(free_port()), "-m", "tests.train_worker", str(path)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((Path(config["output"]) / f"losses-rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("train-fsdp")
    write_corpus(root / "corpus", [9, 9, 9, 9], shards=2, name="fsdp")
    write_corpus(root / "heldout", [9, 9], shards=1, name="heldout")
    base = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    base["data"].update(corpora=[{"path": str(root / "corpus"), "weight": 1.0}], workers=0, batch_size=1)
    base["model"].update(make_tiny_pretrained(root / "pretrained"))
    base["optim"].update(grad_clip=1e-3)  # clipped at every step: the global norm over all shards must be right
    base.update(steps=4, checkpoint_every=2, log_every=1)

    def config(name: str, **fields: Any) -> dict[str, Any]:
        return {**base, "output": str(root / name), **fields}

    evaluated = {"corpus": str(root / "heldout"), "every": 2, "clips": 2, "buckets": 2, "sample_steps": 1,
                 "num_prompts": 1}
    losses = {
        "ddp": torchrun(config("ddp", distributed="ddp"), root / "ddp.yaml"),
        "fsdp": torchrun(config("fsdp", distributed="fsdp", gradient_checkpointing=True, eval=evaluated),
                         root / "fsdp.yaml"),
        "first_half": torchrun(config("resumed", distributed="fsdp", steps=2), root / "half.yaml"),
    }
    shutil.copytree(root / "resumed", root / "ddp-from-fsdp")
    losses["fsdp_resumed"] = torchrun(config("resumed", distributed="fsdp"), root / "resume.yaml")
    losses["ddp_resumed"] = torchrun(config("ddp-from-fsdp", distributed="ddp"), root / "ddp-resume.yaml")
    return {"root": root, "losses": losses}


def test_fsdp_trains_like_ddp(runs: dict[str, Any]) -> None:
    losses = runs["losses"]
    for ddp, fsdp in zip(losses["ddp"], losses["fsdp"], strict=True):
        assert len(fsdp) == 4
        assert fsdp == pytest.approx(ddp, **APPROX)
    assert losses["fsdp"][0] != losses["fsdp"][1]  # each rank trained on its own data
    ddp, fsdp = (checkpoint_dir(runs["root"] / name, 4) for name in ("ddp", "fsdp"))
    for file in ("model.safetensors", "ema.safetensors"):  # whole tensors, under the plain model's names
        expected, saved = load_file(str(ddp / file)), load_file(str(fsdp / file))
        assert saved.keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(saved[key], value, **TOLERANCE)
    expected, saved = load_state(ddp)["optimizer"], load_state(fsdp)["optimizer"]  # AdamW's, numbered as DDP's
    assert saved["param_groups"] == expected["param_groups"] and saved["state"].keys() == expected["state"].keys()
    for index, state in expected["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(saved["state"][index][name], value, **TOLERANCE)


def test_fsdp_resumes_exactly_and_its_evaluation_changes_nothing(runs: dict[str, Any]) -> None:
    losses = runs["losses"]
    resumed = [first + second for first, second in zip(losses["first_half"], losses["fsdp_resumed"], strict=True)]
    assert resumed == losses["fsdp"]  # bit for bit; the 4-step run evaluated at steps 2 and 4, this one never
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["root"] / "fsdp" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/heldout_loss")] == [2, 4]


def test_fsdp_checkpoints_are_loaded_by_ddp_and_sample(runs: dict[str, Any]) -> None:
    losses = runs["losses"]
    for ddp, fsdp in zip(losses["ddp_resumed"], losses["fsdp"], strict=True):
        assert ddp == pytest.approx(fsdp[2:], **APPROX)  # DDP took the FSDP run's weights, AdamW state and RNG
    frames = generate(runs["root"] / "resumed", "a clip", steps=1, seed=0, device="cpu")
    assert frames.shape == (4, 144, 256, 3) and frames.dtype.name == "uint8"


def test_the_compiled_sharded_model_computes_what_the_eager_one_does(tmp_path: Path) -> None:
    """``compile: true`` under FSDP2 compiles the whole sharded model (dynamo skips FSDP2's gather hooks, so each
    block is its own graph), with gradient checkpointing. aot_eager traces and partitions forward and backward
    as inductor does, without the C++ build a 2-core CPU takes minutes for (inductor gave the same, by hand)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
               "127.0.0.1", "--master-port", str(free_port()), "-m", "tests.fsdp_compile_worker", "aot_eager",
               str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1]
    for result in results:
        eager, compiled = result["losses"]
        assert compiled == pytest.approx(eager, **APPROX) and result["grad_difference"] < 1e-5

