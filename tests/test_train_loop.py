"""The training loop on the tiny U-Net with UNTRAINED tiny encoders: it learns, resumes exactly, samples.

The corpus is real (ffmpeg clips in shards written by the shard writer), the text encoder and VAE are
real transformers/diffusers classes with random weights (demo.tiny_training), loaded by the real code.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from demo.tiny_training import make_tiny_pretrained
from jobs.sample import main as sample_main
from jobs.train import main as train_main
from shards.layout import shard_locations
from tests.train_corpus import assert_same_last_checkpoint, write_corpus
from training.checkpoint import checkpoints_root, list_checkpoints
from training.config import TrainConfig, config_from_dict, load_config, save_config
from training.distributed import DistEnv
from training.model import VideoUNet
from training.trainer import EMA, Trainer, ema_decay

ROOT = Path(__file__).resolve().parent.parent
CPU = DistEnv(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("train-loop")
    return {"pretrained": make_tiny_pretrained(root / "pretrained"),
            "two_clips": root / "two", "mixed": root / "mixed",
            "keys": write_corpus(root / "two", [9, 9], shards=1, name="two"),
            "mixed_keys": write_corpus(root / "mixed", [12, 5, 12, 12], shards=2, name="mixed")}


def tiny_config(material: dict, corpus: Path, output: Path, **overrides: object) -> TrainConfig:
    data = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    data["data"]["corpora"] = [{"path": str(corpus), "weight": 1.0}]
    data["model"].update(material["pretrained"])
    data["output"] = str(output)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split("__")
        section = data
        for name in parents:
            section = section[name]
        section[leaf] = value
    return config_from_dict(data)


def test_a_tiny_model_overfits_two_clips(material: dict, tmp_path: Path) -> None:
    cfg = tiny_config(material, material["two_clips"], tmp_path, steps=40, checkpoint_every=40, log_every=20,
                      data__workers=0, diffusion__caption_dropout=0.0, optim__lr=5e-3, optim__warmup_steps=5)
    losses = Trainer(cfg, CPU).train()
    start, end = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert end < 0.4 * start, (start, end)


def test_two_n_steps_equal_n_steps_resume_n_steps(material: dict, tmp_path: Path) -> None:
    """Same final weights, EMA and optimizer state, bit for bit (grad accumulation and a data worker on)."""
    overrides = dict(steps=6, checkpoint_every=3, log_every=3, data__workers=1, optim__grad_accumulation=2)
    straight = Trainer(tiny_config(material, material["mixed"], tmp_path / "a", **overrides), CPU)
    straight.train()
    Trainer(tiny_config(material, material["mixed"], tmp_path / "b", **{**overrides, "steps": 3}), CPU).train()
    resumed = Trainer(tiny_config(material, material["mixed"], tmp_path / "b", **overrides), CPU)
    assert resumed.step == 3
    resumed.train()
    states = assert_same_last_checkpoint(tmp_path / "a", tmp_path / "b", step=6)
    sa, sb = states["a"], states["b"]
    assert all(torch.equal(x, y) for x, y in zip(sa["optimizer"]["state"][0].values(),
                                                  sb["optimizer"]["state"][0].values()))
    first = Trainer(tiny_config(material, material["mixed"], tmp_path / "c", **overrides), CPU)
    assert not torch.equal(next(first.model.parameters()), next(resumed.model.parameters()))  # it did train


def test_the_ema_decay_warms_up() -> None:
    """min(decay, (1 + step) / (10 + step)): the first updates follow the model, late ones use ``decay``."""
    assert ema_decay(0.9999, 0) == pytest.approx(0.1)
    assert ema_decay(0.9999, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.9999, 10**6) == 0.9999
    assert ema_decay(0.9999, 0, warmup=False) == 0.9999
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
        ema = EMA(model, 0.9999)
        model.weight.fill_(1.0)
    ema.update(model, step=0)
    assert torch.allclose(ema.state["weight"], torch.full((2, 2), 0.9))  # 90 % of the way to the model
    ema.update(model, step=10**6)
    assert torch.allclose(ema.state["weight"], torch.full((2, 2), 0.9 + 0.1 * 1e-4))


def test_a_checkpoint_without_ema_resumes_with_the_ema_of_its_weights(material: dict, tmp_path: Path) -> None:
    """The EMA is built after the restore: its weights are the checkpoint's, not the random initialisation."""
    overrides = dict(steps=1, checkpoint_every=1, data__workers=0, optim__ema_decay=0.0)
    Trainer(tiny_config(material, material["two_clips"], tmp_path, **overrides), CPU).train()
    checkpoint = list_checkpoints(tmp_path)[-1]
    assert not (checkpoint / "ema.safetensors").exists()
    resumed = Trainer(tiny_config(material, material["two_clips"], tmp_path, **{**overrides, "steps": 2,
                                                                                 "optim__ema_decay": 0.99}), CPU)
    assert resumed.step == 1 and resumed.ema is not None
    restored = load_file(checkpoint / "model.safetensors")
    assert resumed.ema.state.keys() == restored.keys()
    assert all(torch.equal(resumed.ema.state[k], restored[k].float()) for k in restored)
    torch.manual_seed(resumed.cfg.seed)
    initial = VideoUNet(resumed.cfg.model.unet).state_dict()
    assert any(not torch.equal(initial[k], restored[k]) for k in restored)  # the step did change the weights


def test_a_run_skips_an_unreadable_shard_and_logs_it(material: dict, tmp_path: Path) -> None:
    """One of two shards is random bytes: the run trains on the other (default data.max_bad_shards: 1 of 2)."""
    write_corpus(tmp_path / "damaged", [9, 9, 9, 9], shards=2, name="damaged")
    bad = Path(shard_locations(tmp_path / "damaged")[1].uri)
    bad.write_bytes(bytes(range(256)) * (bad.stat().st_size // 256))
    cfg = tiny_config(material, tmp_path / "damaged", tmp_path / "run", steps=2, checkpoint_every=2, log_every=1,
                      data__workers=1)
    trainer = Trainer(cfg, CPU)
    assert len(trainer.train()) == 2
    assert trainer.loader.bad_shards() == [[str(bad)]]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("data/bad_shards")] == [1.0, 1.0]


def test_a_run_removes_what_an_interrupted_checkpoint_write_left(material: dict, tmp_path: Path) -> None:
    overrides = dict(steps=1, checkpoint_every=1, data__workers=0)
    Trainer(tiny_config(material, material["two_clips"], tmp_path, **overrides), CPU).train()
    crashed = subprocess.Popen(["true"])
    crashed.wait()
    orphan = checkpoints_root(tmp_path) / f".step-00000002.{crashed.pid}.tmp"
    orphan.mkdir()
    (orphan / "model.safetensors").write_bytes(b"half a checkpoint")
    resumed = Trainer(tiny_config(material, material["two_clips"], tmp_path, **overrides), CPU)
    assert resumed.step == 1 and not orphan.exists()
    assert [p.name for p in checkpoints_root(tmp_path).iterdir()] == ["step-00000001"]


def test_train_then_sample_through_the_clis(material: dict, tmp_path: Path) -> None:
    cfg = tiny_config(material, material["two_clips"], tmp_path / "run", steps=2, checkpoint_every=2, log_every=1,
                      gradient_checkpointing=True)
    save_config(cfg, tmp_path / "tiny.yaml")
    assert train_main(["--config", str(tmp_path / "tiny.yaml")]) == 0
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    logged = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_s", "train/data_wait_share", "data/skipped_short"} <= logged
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    out = tmp_path / "video.mp4"
    assert sample_main(["--checkpoint", str(tmp_path / "run"), "--prompt", "smptebars clip 1", "--out", str(out),
                        "--steps", "3", "--guidance", "4", "--fps", "8"]) == 0
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                            "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(out)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 256, 144)
    assert int(stream["nb_read_frames"]) == cfg.data.frames


def test_user_mistakes_are_clear_errors(material: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config key"):
        config_from_dict({"optim": {"learning_rate": 1}})
    missing = tiny_config(material, material["two_clips"], tmp_path, model__vae=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="hf download"):
        Trainer(missing, CPU)
    mismatched = tiny_config(material, material["two_clips"], tmp_path, model__unet__cross_attention_dim=64)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        Trainer(mismatched, CPU)
    assert sample_main(["--checkpoint", str(tmp_path / "none"), "--prompt", "x"]) == 2


def test_the_demo_trains_and_samples_on_a_corpus(material: dict, tmp_path: Path) -> None:
    from demo.train import train_and_sample

    video = train_and_sample(material["two_clips"], tmp_path, steps=2)
    assert video.stat().st_size > 0 and list_checkpoints(tmp_path / "train-tiny")[-1].name == "step-00000002"
