"""Precomputed latents (`videofactory encode`, training.sidecars): training from them gives the losses of encoding
on the fly, sidecars made for another VAE or frame setting are refused, and an interrupted encode resumes without
encoding a shard twice. Tiny UNTRAINED encoders (demo.tiny_training), real shards, CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from demo.tiny_training import make_tiny_pretrained
from shards.layout import SHARDS_DIR
from tests.layout_corpus import s3_bucket_or_skip, upload_tree
from tests.train_corpus import write_corpus
from training.config import TrainConfig, config_from_dict, load_config
from training.distributed import DistEnv
from training.encode import Plan, encode_corpus, run_here
from training.sidecars import META_FILE, SidecarError, find_all
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
CPU = DistEnv(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
# Clips of exactly 7 frames: 4 frames at stride 2 can only start at frame 0, so the frames a sidecar holds are
# the frames the loader would pick on the fly (elsewhere a sidecar fixes one random choice per clip).
EXACT = 7
BUCKETS = [{"width": 256, "height": 144, "frames": 4}, {"width": 144, "height": 256, "frames": 4, "batch_size": 1}]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("encode")
    sizes = [(320, 180), (180, 320), (320, 180), (320, 180), (180, 320), (320, 180)]
    return {"root": root, "pretrained": make_tiny_pretrained(root / "pretrained"),
            "other_vae": make_tiny_pretrained(root / "other", seed=1)["vae"],
            "keys": write_corpus(root / "corpus", [EXACT] * 6, shards=2, name="enc", sizes=sizes)}


def tiny_config(material: dict, corpus: Path | str, output: Path, **data: object) -> TrainConfig:
    cfg = load_config(ROOT / "configs" / "train_tiny.yaml").to_dict()
    cfg["data"].update({"corpora": [{"path": str(corpus), "weight": 1.0}], "workers": 0, **data})
    cfg["model"].update(material["pretrained"])
    cfg["diffusion"]["caption_dropout"] = 0.5  # both kinds of caption embedding in a few steps
    cfg.update(output=str(output), steps=3, checkpoint_every=3, log_every=3)
    return config_from_dict(cfg)


def copy_corpus(material: dict, dest: Path) -> Path:
    """A fresh copy of the corpus (its sidecars are written next to it)."""
    import shutil

    shutil.copytree(material["root"] / "corpus", dest)
    return dest


@pytest.mark.parametrize("buckets", [[], BUCKETS], ids=["fixed size", "buckets"])
def test_training_from_sidecars_gives_the_losses_of_encoding_on_the_fly(material: dict, tmp_path: Path,
                                                                        buckets: list) -> None:
    corpus = copy_corpus(material, tmp_path / "corpus")
    cfg = tiny_config(material, corpus, tmp_path / "encode", buckets=buckets)
    meta = encode_corpus(cfg, cfg.data.corpora[0])
    assert meta["counts"] == {"encoded": 6} and len(meta["encoded_now"]) == 2
    if buckets:
        assert meta["buckets"] == {"0": 4, "1": 2}  # landscape and portrait clips each in their own bucket
    # each trainer seeds the global RNG when built: build and train one after the other
    on_the_fly = Trainer(tiny_config(material, corpus, tmp_path / "a", buckets=buckets, sidecars="off"), CPU)
    expected = on_the_fly.train()
    from_sidecars = Trainer(tiny_config(material, corpus, tmp_path / "b", buckets=buckets, sidecars="require"), CPU)
    losses = from_sidecars.train()
    assert on_the_fly.loader.sidecars == [None] and from_sidecars.loader.sidecars == [meta["where"]]
    assert from_sidecars.loader.state_dict() == on_the_fly.loader.state_dict()  # the same samples, in the same order
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    assert len(set(losses)) == 3
    if buckets:
        assert from_sidecars.loader.bucket_counts() == on_the_fly.loader.bucket_counts() != [0, 0]
    auto = Trainer(tiny_config(material, corpus, tmp_path / "c", buckets=buckets), CPU)  # found by default
    assert auto.loader.sidecars == [meta["where"]]


def test_sidecars_made_for_another_vae_or_frame_count_are_refused(material: dict, tmp_path: Path) -> None:
    corpus = copy_corpus(material, tmp_path / "corpus")
    cfg = tiny_config(material, corpus, tmp_path / "run")
    where = encode_corpus(cfg, cfg.data.corpora[0])["where"]
    other_vae = tiny_config(material, corpus, tmp_path / "run", sidecars="require")
    other_vae.model.vae = material["other_vae"]
    with pytest.raises(SidecarError, match="no sidecars for .* made with other encoders or settings"):
        Trainer(other_vae, CPU)
    other_vae.data.corpora[0].latents = where  # named explicitly: what differs is said
    with pytest.raises(SidecarError, match=r"another vae \(sha256"):
        Trainer(other_vae, CPU)
    fewer_frames = tiny_config(material, corpus, tmp_path / "run", frames=2)
    fewer_frames.data.corpora[0].latents = where
    with pytest.raises(SidecarError, match=r"another data.frames \(4, this run's 2\)"):
        find_all(fewer_frames)
    fewer_frames.data.corpora[0].latents = ""
    assert find_all(fewer_frames) == [None]  # auto: encoded on the fly, with a warning
    with pytest.raises(SidecarError, match="another vae"):  # nor does the encode job write into them
        encode_corpus(other_vae, other_vae.data.corpora[0])


def test_an_interrupted_encode_resumes_without_encoding_a_shard_twice(material: dict, tmp_path: Path) -> None:
    corpus = copy_corpus(material, tmp_path / "corpus")
    write_corpus(corpus, [EXACT, 5, EXACT, EXACT, EXACT, 9], shards=3, name="enc")  # 3 shards, one short clip
    cfg = tiny_config(material, corpus, tmp_path / "run")
    encoded: list[str] = []

    def killed_after_one(c: TrainConfig, work: Plan) -> list[dict]:
        encoded.extend(work.todo[:1])
        run_here(c, Plan(work.corpus, work.root, work.where, work.spec, work.shards, work.todo[:1]))
        raise KeyboardInterrupt  # the job dies here

    def counted(c: TrainConfig, work: Plan) -> list[dict]:
        encoded.extend(work.todo)
        return run_here(c, work)

    with pytest.raises(KeyboardInterrupt):
        encode_corpus(cfg, cfg.data.corpora[0], runner=killed_after_one)
    require = tiny_config(material, corpus, tmp_path / "run", sidecars="require")
    with pytest.raises(SidecarError, match="unfinished"):
        find_all(require)
    where = Path(encode_corpus.__globals__["plan"](cfg, cfg.data.corpora[0]).where.uri)
    first = where / SHARDS_DIR / encoded[0]
    first_bytes, first_mtime = first.read_bytes(), first.stat().st_mtime_ns
    meta = encode_corpus(cfg, cfg.data.corpora[0], runner=counted)
    assert sorted(encoded) == sorted(meta["shards"]) and len(encoded) == 3  # each shard encoded once
    assert first.stat().st_mtime_ns == first_mtime and first.read_bytes() == first_bytes
    assert meta["counts"] == {"encoded": 5, "short": 1}
    again = encode_corpus(cfg, cfg.data.corpora[0], runner=counted)
    assert again["encoded_now"] == [] and len(encoded) == 3
    assert json.loads((where / META_FILE).read_text())["shards"] == meta["shards"]
    assert find_all(require) == [str(where)]


def test_the_encode_command_runs_as_a_ray_data_job(material: dict, tmp_path: Path, local_ray: None) -> None:
    """`videofactory encode --corpus DIR --config train.yaml`: Ray Data actors write the sidecars a run then uses."""
    from jobs.cli import main
    from training.config import save_config

    corpus = copy_corpus(material, tmp_path / "corpus")
    cfg = tiny_config(material, tmp_path / "elsewhere", tmp_path / "run")
    save_config(cfg, tmp_path / "train.yaml")
    assert main(["encode", "--config", str(tmp_path / "train.yaml"), "--corpus", str(corpus)]) == 0
    (where,) = find_all(tiny_config(material, corpus, tmp_path / "run", sidecars="require"))
    assert where.startswith(str(corpus / "latents"))
    meta = json.loads((Path(where) / META_FILE).read_text())
    assert meta["counts"] == {"encoded": 6} and sorted(meta["shards"]) == sorted(
        p.name for p in (corpus / SHARDS_DIR).glob("*.tar"))


def test_sidecars_are_written_to_and_read_from_an_object_store(material: dict, tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    """The sidecars of a corpus in s3:// go next to it and a run streams them from there, as on a local disk."""
    remote = upload_tree(material["root"] / "corpus", f"{s3_bucket_or_skip(request)}/corpus")
    cfg = tiny_config(material, remote.uri, tmp_path / "run", sidecars="require")
    meta = encode_corpus(cfg, cfg.data.corpora[0])
    assert meta["where"].startswith(remote.uri + "/latents/") and meta["counts"] == {"encoded": 6}
    trainer = Trainer(cfg, CPU)
    assert trainer.loader.sidecars == [meta["where"]]
    losses = trainer.train()
    local = Trainer(tiny_config(material, copy_corpus(material, tmp_path / "local"), tmp_path / "local-run",
                                sidecars="off"), CPU)
    np.testing.assert_allclose(losses, local.train(), rtol=1e-4)


def test_a_bucketed_stream_of_sidecars_resumes_exactly(material: dict, tmp_path: Path) -> None:
    """Two workers over sidecars with buckets: a loader resumed while a bucket holds a pending sample continues with
    the batches of the uninterrupted one."""
    from training.data import ResumableLoader

    corpus = tmp_path / "corpus"
    write_corpus(corpus, [EXACT] * 12, shards=2, name="enc", sizes=[(320, 180), (180, 320)] * 6)
    cfg = tiny_config(material, corpus, tmp_path / "run", buckets=BUCKETS, workers=2, sidecars="require")
    encode_corpus(cfg, cfg.data.corpora[0])
    sidecars = find_all(cfg)
    first = ResumableLoader(cfg.data, cfg.seed, sidecars=sidecars)
    for _ in range(20):  # until a bucket holds a sample that no batch has yet
        next(first)
        state = first.state_dict()
        if any(refs for worker in state["workers"] for refs in worker["pending"]):
            break
    else:
        pytest.fail("no sample was ever pending")
    expected = [next(first) for _ in range(6)]
    resumed = ResumableLoader(cfg.data, cfg.seed, state=state, sidecars=sidecars)
    batches = [next(resumed) for _ in range(6)]
    assert [b["key"] for b in batches] == [b["key"] for b in expected]
    assert all(torch.equal(b["latent_mean"], e["latent_mean"]) and torch.equal(b["text"], e["text"])
               for b, e in zip(batches, expected))
    assert {tuple(b["latent_mean"].shape[3:]) for b in expected} <= {(18, 32), (32, 18)}  # (h, w) of each bucket
