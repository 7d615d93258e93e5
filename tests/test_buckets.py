"""Buckets (data.buckets, training.buckets): each clip goes to the bucket that suits its size and length (from its
index metadata), each batch holds one bucket at that bucket's size, clips that fit none are skipped and counted,
and the stream and a training run resume exactly, pending batches included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.train_corpus import assert_same_last_checkpoint, write_corpus
from training.buckets import BucketTable
from training.config import BucketConfig, CorpusConfig, DataConfig, config_from_dict, load_config
from training.data import ResumableLoader
from training.distributed import DistEnv
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
CPU = DistEnv(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
TABLE = [BucketConfig(width=256, height=144, frames=4),  # 16:9, 4 frames at stride 2: 7 frames needed
         BucketConfig(width=144, height=256, frames=4, batch_size=1),  # portrait
         BucketConfig(width=128, height=128, frames=2, batch_size=3)]  # square, 3 frames needed
# (frames, (width, height)): landscape, portrait, square, a landscape clip too short for 4 frames (so square
# crops it), and a clip smaller than every bucket (no bucket)
CLIPS = [(9, (320, 180)), (9, (180, 320)), (9, (240, 240)), (5, (320, 180)), (9, (96, 96)),
         (9, (320, 180)), (9, (320, 180)), (9, (240, 240)), (9, (180, 320)), (9, (240, 240))]
EXPECTED = [0, 1, 2, 2, None, 0, 0, 2, 1, 2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("buckets") / "corpus"
    keys = write_corpus(root, [f for f, _ in CLIPS], shards=2, name="bk", sizes=[s for _, s in CLIPS])
    return root, keys


def data_config(path: Path, **overrides: object) -> DataConfig:
    fields = dict(frames=4, stride=2, width=256, height=144, batch_size=2, workers=0, shuffle_buffer=4, buckets=TABLE)
    fields.update(overrides)
    return DataConfig(corpora=[CorpusConfig(path=str(path))], **fields)


def test_a_clip_goes_to_the_bucket_it_fills_with_the_closest_aspect() -> None:
    table = BucketTable.of(DataConfig(stride=2, buckets=TABLE))
    meta = [{"clip_width": w, "clip_height": h, "clip_frames": f, "clip_fps": 25.0} for f, (w, h) in CLIPS]
    assert [table.assign(m) for m in meta] == EXPECTED
    assert table.assign({**meta[0], "clip_fps": None}) is None  # a row without extraction metadata fits nothing
    assert table.assign(meta[0], corpus_frames=2) == 2  # an image-like corpus only goes to buckets of its frames
    assert BucketTable.of(DataConfig()) is None


def test_each_batch_is_one_bucket_at_its_size_and_buckets_are_counted(corpus: tuple[Path, list[str]]) -> None:
    path, keys = corpus
    bucket_of = dict(zip(keys, EXPECTED))
    loader = ResumableLoader(data_config(path), seed=0)
    batches = [next(loader) for _ in range(12)]
    sizes = {0: (2, 4, 144, 256, 3), 1: (1, 4, 256, 144, 3), 2: (3, 2, 128, 128, 3)}
    for batch in batches:
        assert batch["video"].shape == sizes[batch["bucket"]]
        assert {bucket_of[k] for k in batch["key"]} == {batch["bucket"]}
    counts = loader.bucket_counts()
    assert counts == [sum(b["video"].shape[0] for b in batches if b["bucket"] == i) for i in range(3)]
    assert all(counts)
    skipped = loader.skipped()
    assert skipped["no_bucket"] >= 1 and skipped["short"] == 0  # the 96x96 clip, once per epoch read
    epoch, taken = loader.positions[0]["corpora"][0]
    pending = sum(len(refs) for refs in loader.positions[0]["pending"])
    assert epoch * len(keys) + taken == sum(counts) + skipped["no_bucket"] + pending  # every draw accounted for


def test_bucketed_batches_resume_exactly_with_samples_pending(corpus: tuple[Path, list[str]]) -> None:
    """2 workers: after 7 batches some buckets hold samples not yet batched; a resumed loader has them again."""
    path, _ = corpus
    cfg = data_config(path, workers=2)
    first = ResumableLoader(cfg, seed=1)
    for _ in range(7):
        next(first)
    state = first.state_dict()
    assert any(refs for worker in state["workers"] for refs in worker["pending"])
    expected = [next(first) for _ in range(6)]
    resumed = ResumableLoader(cfg, seed=1, state=state)
    batches = [next(resumed) for _ in range(6)]
    assert [b["key"] for b in batches] == [b["key"] for b in expected]
    assert all(torch.equal(b["video"], e["video"]) for b, e in zip(batches, expected))
    with pytest.raises(ValueError, match="same bucket table"):
        ResumableLoader(data_config(path, workers=2, buckets=TABLE[:2]), seed=1, state=state)


@pytest.mark.usefixtures("one_thread")
def test_two_n_bucketed_steps_equal_n_steps_resume_n_steps(corpus: tuple[Path, list[str]], tmp_path: Path) -> None:
    from demo.tiny_training import make_tiny_pretrained

    pretrained = make_tiny_pretrained(tmp_path / "pretrained")

    def config(output: Path, steps: int) -> object:
        data = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
        data["data"].update(corpora=[{"path": str(corpus[0])}], workers=1,
                            buckets=[b.to_dict() for b in TABLE])
        data["model"].update(pretrained)
        data["optim"]["grad_accumulation"] = 2
        data.update(output=str(output), steps=steps, checkpoint_every=3, log_every=3)
        return config_from_dict(data)

    straight = Trainer(config(tmp_path / "a", 6), CPU)
    straight.train()
    Trainer(config(tmp_path / "b", 3), CPU).train()
    resumed = Trainer(config(tmp_path / "b", 6), CPU)
    assert resumed.step == 3
    resumed.train()
    assert_same_last_checkpoint(tmp_path / "a", tmp_path / "b", step=6)
    assert sum(1 for count in straight.loader.bucket_counts() if count) >= 2  # it trained at several sizes


def test_a_bucket_the_unet_cannot_halve_is_refused(corpus: tuple[Path, list[str]], tmp_path: Path) -> None:
    from demo.tiny_training import make_tiny_pretrained

    data = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    data["data"].update(corpora=[{"path": str(corpus[0])}], buckets=[{"width": 136, "height": 136, "frames": 4}])
    data["model"].update(make_tiny_pretrained(tmp_path / "pretrained"))
    data["output"] = str(tmp_path / "run")
    with pytest.raises(ValueError, match="136x136.*cannot halve evenly"):  # latent 17x17, two levels
        Trainer(config_from_dict(data), CPU)
    data["data"]["corpora"][0]["frames"] = 8
    with pytest.raises(ValueError, match="frames: 8, which no bucket"):
        config_from_dict(data).check()


def test_single_frame_buckets_beside_video_buckets_are_refused_on_several_ranks() -> None:
    """Each rank yields whichever bucket fills first: a T = 1 batch on one rank and video on another would have
    DDP/FSDP reduce the gradients of different parameters (the temporal layers)."""
    from training.trainer import check_buckets

    data = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    data["data"].update(corpora=[{"path": "unused"}], buckets=[{"width": 128, "height": 64, "frames": 1},
                                                               {"width": 128, "height": 64, "frames": 4}])
    cfg = config_from_dict(data)
    check_buckets(cfg, 8, world=1)
    with pytest.raises(ValueError, match="mixes frames: 1 with video buckets"):
        check_buckets(cfg, 8, world=2)
    data["data"]["buckets"][0]["frames"] = 8  # video buckets of different lengths use every layer
    check_buckets(config_from_dict(data), 8, world=2)
