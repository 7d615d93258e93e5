"""Distributed training on CPU: 2 DDP processes under torchrun (gloo), and 2 Ray Train workers.

Both run the real entry point on a real corpus with the UNTRAINED tiny encoders and check that every
rank trained on its own part of the data and that rank 0's checkpoint holds every rank's position.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from demo.tiny_training import make_tiny_pretrained
from jobs.train import absolute_paths, train_on_ray
from tests.train_corpus import write_corpus
from training.checkpoint import list_checkpoints, load_state
from training.config import TrainConfig, config_from_dict, load_config, save_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_rank_config(tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    root = tmp_path_factory.mktemp("train-dist")
    write_corpus(root / "corpus", [9, 9, 9, 9], shards=2, name="dist")
    data = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    data["data"].update(corpora=[{"path": str(root / "corpus"), "weight": 1.0}], workers=0, batch_size=1)
    data["model"].update(make_tiny_pretrained(root / "pretrained"))
    data.update(steps=2, checkpoint_every=2, log_every=1, output=str(root / "unused"))
    return config_from_dict(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_two_ranks_trained(output: Path, step: int) -> None:
    checkpoint = list_checkpoints(output)[-1]
    assert checkpoint.name == f"step-{step:08d}"
    state = load_state(checkpoint)
    assert len(state["data"]) == len(state["rng"]) == 2
    positions = [rank["workers"][0] for rank in state["data"]]
    assert all(p["samples"] == step for p in positions)  # batch 1 per rank and step
    assert state["rng"][0]["torch"].ne(state["rng"][1]["torch"]).any()  # ranks draw different noise


def test_two_process_ddp_under_torchrun_and_resume(two_rank_config: TrainConfig, tmp_path: Path) -> None:
    cfg = config_from_dict({**two_rank_config.to_dict(), "output": str(tmp_path / "run")})
    save_config(cfg, tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                   "127.0.0.1", "--master-port", str(free_port()), "-m", "jobs.train",
                   "--config", str(tmp_path / "ddp.yaml"), *extra]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    torchrun()
    assert_two_ranks_trained(tmp_path / "run", 2)
    resumed = torchrun("--steps", "3")
    assert "resumed from" in resumed.stderr and "at step 2" in resumed.stderr
    assert_two_ranks_trained(tmp_path / "run", 3)


@pytest.mark.slow
def test_two_ray_train_workers(two_rank_config: TrainConfig, tmp_path: Path, local_ray: None) -> None:
    cfg = absolute_paths(config_from_dict({**two_rank_config.to_dict(), "output": str(tmp_path / "ray-run")}))
    train_on_ray(cfg, num_workers=2)
    assert_two_ranks_trained(tmp_path / "ray-run", 2)


def test_every_local_path_a_worker_opens_is_made_absolute(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = {"data": {"corpora": [{"path": "corpus"}]},
                "model": {"text_encoder": "m/te", "tokenizer": "m/tok", "vae": "m/vae", "init_from": "m/unet"},
                "eval": {"corpus": "held-out", "clip_model": "m/clip", "i3d_weights": "m/i3d.pt"},
                "output": "out"}
    data = absolute_paths(config_from_dict(relative)).to_dict()
    paths = [data["data"]["corpora"][0]["path"], data["output"], data["eval"]["corpus"],
             *(data["model"][k] for k in ("text_encoder", "tokenizer", "vae", "init_from")),
             *(data["eval"][k] for k in ("clip_model", "i3d_weights"))]
    assert all(p.startswith(str(tmp_path)) for p in paths), paths
    assert absolute_paths(config_from_dict({"data": {"corpora": [{"path": "s3://b/c"}]}})).data.corpora[0].path \
        == "s3://b/c"
