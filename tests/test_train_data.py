"""The training loader: clip shape and size, short clips skipped, parts disjoint, corpora mixed, exact resume,
and the same stream from a corpus in an object store.

Every test streams real shards, written in the corpus layout from ffmpeg-made clips.
"""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from shards.layout import SHARDS_DIR
from shards.reader import shard_samples
from tests.layout_corpus import s3_bucket_or_skip, upload_tree
from tests.train_corpus import write_corpus
from training.config import CorpusConfig, DataConfig
from training.data import ClipSpec, NothingToTrainOnError, ResumableLoader, decode_sample, resize_crop

LONG, SHORT = 12, 5  # frames; the loader below needs 7 (4 frames at stride 2)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    root = tmp_path_factory.mktemp("train-data")
    return {
        "four_shards": (root / "a", write_corpus(root / "a", [LONG] * 8, shards=4, name="a")),
        "one_shard": (root / "b", write_corpus(root / "b", [LONG] * 8, shards=1, name="b")),
        "with_short": (root / "c", write_corpus(root / "c", [LONG, SHORT, LONG, SHORT, LONG, LONG], shards=2,
                                                name="c")),
    }


def data_config(*paths: Path | str, weights: list[float] | None = None, corpus_frames: list[int | None] | None = None,
                **overrides: object) -> DataConfig:
    weights = weights or [1.0] * len(paths)
    corpus_frames = corpus_frames or [None] * len(paths)
    fields = dict(frames=4, stride=2, width=256, height=144, batch_size=2, workers=0, shuffle_buffer=4)
    fields.update(overrides)
    return DataConfig(corpora=[CorpusConfig(path=str(p), weight=w, frames=f)
                               for p, w, f in zip(paths, weights, corpus_frames)], **fields)


def take(loader: ResumableLoader, batches: int) -> list[dict]:
    return [next(loader) for _ in range(batches)]


def test_batches_have_the_configured_shape_and_captions(corpora: dict) -> None:
    path, keys = corpora["four_shards"]
    batch = next(ResumableLoader(data_config(path), seed=0))
    assert batch["video"].shape == (2, 4, 144, 256, 3) and batch["video"].dtype == torch.uint8
    assert set(batch["key"]) <= set(keys)
    patterns = {k: c.split(" clip ")[0] for k, c in zip(batch["key"], batch["caption"])}
    assert all(c.endswith(f"clip {int(k[-4:])}") for k, c in zip(batch["key"], batch["caption"]))
    assert len(patterns) == 2


def test_frame_indices_by_stride_and_by_fps() -> None:
    rng = random.Random(0)
    by_stride = ClipSpec(4, 3, None, 256, 144).frame_indices(10, 25.0, rng)
    assert by_stride == [0, 3, 6, 9]  # exactly fits: the only start is 0
    by_fps = ClipSpec(5, None, 12.5, 256, 144).frame_indices(100, 25.0, rng)
    assert np.diff(by_fps).tolist() == [2, 2, 2, 2]
    assert ClipSpec(4, 3, None, 256, 144).frame_indices(9, 25.0, rng) is None


def test_resize_crop_covers_then_crops_the_centre() -> None:
    """A 4:3 frame with a green band in its top eighth: cropping to 16:9 cuts the band off."""
    image = np.full((240, 320, 3), 128, np.uint8)
    image[:30] = (0, 255, 0)
    image[:, :160, 0] = 250  # left half reddish, so the crop must keep left on the left
    out = resize_crop(av.VideoFrame.from_ndarray(image, format="rgb24"), 256, 144)
    assert out.shape == (144, 256, 3)
    assert out[:, :, 1].max() < 200  # no green left
    assert out[:, :100, 0].min() > 240 and out[:, 160:, 0].max() < 140


def test_short_clips_are_skipped_and_counted(corpora: dict) -> None:
    path, keys = corpora["with_short"]
    loader = ResumableLoader(data_config(path, batch_size=1), seed=0)
    seen = [b["key"][0] for b in take(loader, 8)]  # two epochs of the 4 long clips
    long_keys = {k for k, n in zip(keys, [LONG, SHORT, LONG, SHORT, LONG, LONG]) if n == LONG}
    assert set(seen) == long_keys and len(seen) == 8
    skipped = loader.skipped()
    epoch, taken = loader.positions[0]["corpora"][0]
    assert epoch == 1 and skipped["samples"] == 8 and skipped["bad"] == 0
    assert skipped["short"] >= 2 and epoch * len(keys) + taken == 8 + skipped["short"]  # every draw accounted for


@pytest.mark.timeout(120)  # the old loader looped here forever
@pytest.mark.parametrize("buckets", [False, True])
def test_a_corpus_with_nothing_to_train_on_stops_with_an_error_instead_of_looping(tmp_path: Path,
                                                                                   buckets: bool) -> None:
    """Every clip too short for the frames asked: the loader skips a whole epoch, then says so (it used to skip
    samples forever, and training hung with no message)."""
    write_corpus(tmp_path, [SHORT] * 4, shards=2, name="s")
    table = {"buckets": [{"width": 256, "height": 144, "frames": 4, "batch_size": 1}]} if buckets else {}
    loader = ResumableLoader(data_config(tmp_path, batch_size=1, **table), seed=0)
    with pytest.raises(NothingToTrainOnError, match=r"gave nothing to train on .*ask fewer frames"):
        next(loader)


@pytest.mark.parametrize("corpus", ["four_shards", "one_shard"])
def test_ranks_and_workers_read_disjoint_parts(corpora: dict, corpus: str) -> None:
    """2 ranks x 2 workers: one epoch of every part together is the corpus, each sample once."""
    path, keys = corpora[corpus]
    seen = []
    for rank in range(2):
        loader = ResumableLoader(data_config(path, batch_size=1, workers=2), seed=3, rank=rank, world=2)
        seen += [b["key"][0] for b in take(loader, 4)]  # 2 per worker: one epoch of a quarter of 8
        assert all(p["corpora"][0][0] == 0 for p in loader.positions)
    assert sorted(seen) == sorted(keys)


def test_corpora_are_mixed_by_weight(corpora: dict) -> None:
    a, b = corpora["four_shards"][0], corpora["one_shard"][0]
    loader = ResumableLoader(data_config(a, b, weights=[3.0, 1.0], batch_size=8, frames=1, stride=1), seed=0)
    keys = [k for batch in take(loader, 20) for k in batch["key"]]
    share = sum(k.startswith("a_") for k in keys) / len(keys)
    assert 0.65 < share < 0.85, share


def test_resume_continues_with_the_same_batches(corpora: dict) -> None:
    """7 batches, state, 5 more == a fresh loader from that state's 5 (2 workers: the rotation matters)."""
    path, _ = corpora["with_short"]
    cfg = data_config(path, workers=2)
    first = ResumableLoader(cfg, seed=1)
    take(first, 7)
    state = first.state_dict()
    expected = take(first, 5)
    resumed = take(ResumableLoader(cfg, seed=1, state=state), 5)
    assert [b["key"] for b in resumed] == [b["key"] for b in expected]
    assert all(torch.equal(r["video"], e["video"]) for r, e in zip(resumed, expected))
    with pytest.raises(ValueError, match="same number"):
        ResumableLoader(data_config(path, workers=1), seed=1, state=state)


def test_a_corpus_named_by_its_shards_folder_streams_the_same(corpora: dict) -> None:
    path, _ = corpora["with_short"]
    by_root = take(ResumableLoader(data_config(path), seed=2), 3)
    by_shards = take(ResumableLoader(data_config(path / SHARDS_DIR), seed=2), 3)
    assert [b["key"] for b in by_shards] == [b["key"] for b in by_root]


def test_a_corpus_in_an_object_store_streams_the_same_batches(corpora: dict, request: pytest.FixtureRequest) -> None:
    """Shards streamed from s3:// by DataLoader worker processes: the batches of the local copy, resumable."""
    path, _ = corpora["with_short"]
    remote = upload_tree(path, f"{s3_bucket_or_skip(request)}/corpus")
    local = ResumableLoader(data_config(path, workers=2), seed=1)
    expected = take(local, 6)
    loader = ResumableLoader(data_config(remote.uri, workers=2), seed=1)
    batches = take(loader, 6)
    assert [b["key"] for b in batches] == [b["key"] for b in expected]
    assert all(torch.equal(b["video"], e["video"]) for b, e in zip(batches, expected))
    resumed = take(ResumableLoader(data_config(remote.uri, workers=2), seed=1, state=loader.state_dict()), 2)
    assert [b["key"] for b in resumed] == [b["key"] for b in take(local, 2)]


def test_images_and_videos_are_mixed_by_weight_one_frame_count_per_batch(corpora: dict) -> None:
    """Joint image-video training: a corpus with frames: 1 gives T = 1 batches (single frames of its clips),
    never mixed with the T = 4 video batches, in the share of its weight; the same seed gives the same
    sequence, a resumed loader continues it, and every batch carries its clips' sampled frame rate."""
    videos, images = corpora["four_shards"][0], corpora["one_shard"][0]
    cfg = data_config(videos, images, weights=[1.0, 3.0], corpus_frames=[None, 1], batch_size=2)
    loader = ResumableLoader(cfg, seed=0)
    batches = take(loader, 24)
    lengths = [b["video"].shape[1] for b in batches]
    assert set(lengths) == {1, 4}
    for b in batches:  # one frame count per batch, from the corpus that has it
        assert {k[0] for k in b["key"]} == ({"b"} if b["video"].shape[1] == 1 else {"a"})
        assert b["video"].shape[2:] == (144, 256, 3) and b["fps"].tolist() == [12.5, 12.5]  # 25 fps, stride 2
    share = lengths.count(1) / len(lengths)
    assert 0.55 < share < 0.95, share  # weight 3 of 4
    assert [b["video"].shape[1] for b in take(ResumableLoader(cfg, seed=0), 24)] == lengths
    assert [b["video"].shape[1] for b in take(ResumableLoader(cfg, seed=1), 24)] != lengths
    state = loader.state_dict()
    expected = take(loader, 4)
    resumed = take(ResumableLoader(cfg, seed=0, state=state), 4)
    assert [b["key"] for b in resumed] == [b["key"] for b in expected]
    assert all(torch.equal(r["video"], e["video"]) for r, e in zip(resumed, expected))


def test_every_rank_draws_the_same_frame_count_for_its_nth_batch(corpora: dict) -> None:
    """A T = 1 batch skips the temporal layers: if one rank had it while another had video, DDP and FSDP would
    reduce gradients of different parameter sets. So the frame count is drawn alike on every rank (the
    samples themselves still differ)."""
    videos, images = corpora["four_shards"][0], corpora["one_shard"][0]
    cfg = data_config(videos, images, weights=[1.0, 1.0], corpus_frames=[None, 1], batch_size=2, workers=2)
    ranks = [take(ResumableLoader(cfg, seed=0, rank=rank, world=2), 12) for rank in range(2)]
    lengths = [[b["video"].shape[1] for b in batches] for batches in ranks]
    assert set(lengths[0]) == {1, 4}
    assert lengths[0] == lengths[1]
    assert [b["key"] for b in ranks[0]] != [b["key"] for b in ranks[1]]


def write_image_folder(folder: Path, colours: list[tuple[int, int, int]]) -> Path:
    """A WebDataset folder of still images as img2dataset writes one: ``00000.tar`` of ``<key>.jpg`` + ``.txt``
    (no ``shards/``, no index): 320x240 JPEGs, one flat colour each, captioned with their colour."""
    import io
    import tarfile

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for i, colour in enumerate(colours):
            jpg = io.BytesIO()
            Image.new("RGB", (320, 240), colour).save(jpg, format="JPEG", quality=95)
            for ext, data in (("jpg", jpg.getvalue()), ("txt", f"colour {colour}".encode())):
                member = tarfile.TarInfo(f"{i:09d}.{ext}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return folder


def test_a_folder_of_still_images_trains_as_single_frames_beside_videos(corpora: dict, tmp_path: Path) -> None:
    """Joint image-video training on a real image dataset: a WebDataset folder of JPEGs (img2dataset's layout)
    as a corpus with frames: 1 gives T = 1 batches of its pictures, scaled and cropped like video frames; in a
    corpus of more frames a still is too short and is skipped and counted, never stretched into a video."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    images = write_image_folder(tmp_path / "images", colours)
    cfg = data_config(corpora["four_shards"][0], images, weights=[1.0, 1.0], corpus_frames=[None, 1], fps=10.0)
    batches = take(ResumableLoader(cfg, seed=0), 16)
    stills = [b for b in batches if b["video"].shape[1] == 1]
    assert stills and len(stills) < len(batches)
    for batch in stills:
        assert batch["video"].shape[2:] == (144, 256, 3) and batch["fps"].tolist() == [10.0, 10.0]
        for picture, caption in zip(batch["video"], batch["caption"], strict=True):
            colour = tuple(int(c) for c in caption.removeprefix("colour (").removesuffix(")").split(", "))
            assert colour in colours
            assert (picture.float().mean(dim=(0, 1, 2)) - torch.tensor(colour)).abs().max() < 8  # that picture
    still = next(shard_samples([images / "00000.tar"]))
    assert decode_sample(still, ClipSpec.of(cfg), random.Random(0)) is None  # 4 frames asked of a still: too short


def test_a_joint_image_video_run_with_fps_conditioning_trains(corpora: dict, tmp_path: Path) -> None:
    """End to end on the tiny U-Net: image (T = 1) and video (T = 4) batches both reach the model, with their frame
    rate, and the fps embedding (zero at init) learns from the video batches."""
    from demo.tiny_training import make_tiny_pretrained
    from training.config import config_from_dict, load_config
    from training.distributed import DistEnv
    from training.trainer import Trainer

    data = load_config(Path(__file__).resolve().parent.parent / "configs" / "train_tiny.yaml").to_dict()
    data["data"].update(corpora=[{"path": str(corpora["four_shards"][0]), "weight": 1.0},
                                 {"path": str(corpora["one_shard"][0]), "weight": 1.0, "frames": 1}], workers=0)
    data["model"].update(make_tiny_pretrained(tmp_path / "pretrained"))
    data["model"]["unet"]["fps_conditioning"] = True
    data.update(output=str(tmp_path / "run"), steps=6, checkpoint_every=6, log_every=6)
    trainer = Trainer(config_from_dict(data), DistEnv(rank=0, world=1, local_rank=0, device=torch.device("cpu")))
    seen: list[tuple[int, torch.Tensor]] = []
    forward = trainer.model.forward
    trainer.network = lambda x, t, c, fps=None: (seen.append((x.shape[2], fps)), forward(x, t, c, fps=fps))[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses = trainer.train()
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert {t for t, _ in seen} == {1, 4}
    assert all(fps is not None and fps.tolist() == [12.5, 12.5] for _, fps in seen)
    assert trainer.model.fps_embed.mlp[-1].weight.abs().sum() > 0, "the fps embedding learned"
    from training.sample import generate, write_mp4

    frames = generate(tmp_path / "run", "a clip", steps=2, fps=12.5, device="cpu")  # a conditioned model samples
    assert frames.shape == (4, 144, 256, 3)
    # `sample --fps` is both what the model is asked for and the mp4's rate
    from jobs.sample import main as sample_main

    def decoded(path: Path) -> np.ndarray:
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    assert sample_main(["--checkpoint", str(tmp_path / "run"), "--prompt", "a clip", "--steps", "2", "--fps", "25",
                        "--out", str(tmp_path / "cli.mp4")]) == 0
    with av.open(str(tmp_path / "cli.mp4")) as container:
        assert container.streams.video[0].average_rate == 25
    asked = {rate: decoded(write_mp4(generate(tmp_path / "run", "a clip", steps=2, fps=rate, device="cpu"),
                                     tmp_path / f"{rate}.mp4", 25)) for rate in (25, 8)}
    assert np.array_equal(decoded(tmp_path / "cli.mp4"), asked[25])
    assert not np.array_equal(asked[25], asked[8]), "the frame rate asked for reaches the model"
