"""Unreadable shards in training: skipped and counted, bounded by ``data.max_bad_shards``, resumed exactly.

A corpus of 4 real shards (2 clips each) in which one shard is truncated in the middle of a clip and
another is overwritten with random bytes: both raise ``tarfile.ReadError`` when read.
"""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import pytest
import torch

from shards.layout import shard_locations
from shards.reader import shard_samples
from tests.train_corpus import write_corpus
from training.config import CorpusConfig, DataConfig
from training.data import ResumableLoader, UnreadableShardsError, bad_shard_limit

LONG = 12


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bad-shards") / "corpus"
    write_corpus(root, [LONG] * 8, shards=4, name="d")
    shards = [s.uri for s in shard_locations(root)]
    assert len(shards) == 4
    keys = {uri: [s["__key__"] for s in shard_samples([uri])] for uri in shards}
    truncated, garbage = Path(shards[1]), Path(shards[2])
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 3 // 4])  # inside the second clip's mp4
    garbage.write_bytes(random.Random(0).randbytes(len(garbage.read_bytes())))
    for bad in (truncated, garbage):
        with pytest.raises(tarfile.ReadError):
            list(shard_samples([str(bad)]))
    return {"root": root, "shards": shards, "keys": keys, "bad": sorted([str(truncated), str(garbage)]),
            "good_keys": {k for uri in (shards[0], shards[3]) for k in keys[uri]},
            "truncated_keys": set(keys[shards[1]]), "garbage_keys": set(keys[shards[2]])}


def data_config(path: Path, **overrides: object) -> DataConfig:
    fields = dict(frames=4, stride=2, width=256, height=144, batch_size=1, workers=0, shuffle_buffer=4)
    fields.update(overrides)
    return DataConfig(corpora=[CorpusConfig(path=str(path), weight=1.0)], **fields)


def take(loader: ResumableLoader, batches: int) -> list[dict]:
    return [next(loader) for _ in range(batches)]


def test_the_limit_is_a_count_or_a_share_rounded_up() -> None:
    assert bad_shard_limit(0.02, 4) == 1 and bad_shard_limit(0.02, 50) == 1 and bad_shard_limit(0.02, 51) == 2
    assert bad_shard_limit(0.02, 100) == 2 and bad_shard_limit(3, 10) == 3 and bad_shard_limit(0, 10) == 0


def test_unreadable_shards_are_skipped_and_counted(damaged: dict) -> None:
    loader = ResumableLoader(data_config(damaged["root"], max_bad_shards=2), seed=0)
    seen = {b["key"][0] for b in take(loader, 12)}  # over two epochs
    assert damaged["good_keys"] <= seen <= damaged["good_keys"] | damaged["truncated_keys"]
    assert not seen & damaged["garbage_keys"]
    assert loader.bad_shards() == [damaged["bad"]]
    skipped = loader.skipped()
    assert skipped["bad_shards"] == 2 and skipped["samples"] == 12
    assert loader.state_dict()["workers"][0]["bad_shards"] == [damaged["bad"]]  # saved with the position


@pytest.mark.parametrize("limit", [1, 0.02])
def test_more_unreadable_shards_than_allowed_stop_naming_them(damaged: dict, limit: float) -> None:
    """0.02 of 4 shards rounds up to 1: the default tolerates one, not two."""
    loader = ResumableLoader(data_config(damaged["root"], max_bad_shards=limit, workers=2), seed=0)
    with pytest.raises(UnreadableShardsError, match="max_bad_shards") as raised:
        take(loader, 12)
    assert all(name in str(raised.value) for name in damaged["bad"])


def test_a_corpus_of_only_unreadable_shards_is_an_error(damaged: dict, tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    for name in ("x-p00000-000000.tar", "x-p00000-000001.tar"):
        (tmp_path / "shards" / name).write_bytes(b"not a tar at all" * 64)
    with pytest.raises(UnreadableShardsError, match="every shard"):
        next(ResumableLoader(data_config(tmp_path, max_bad_shards=10), seed=0))


def test_resume_over_unreadable_shards_continues_with_the_same_batches(damaged: dict) -> None:
    """2 workers, one shard each per epoch: the epochs dealt an unreadable shard are passed over identically."""
    cfg = data_config(damaged["root"], max_bad_shards=2, workers=2)
    first = ResumableLoader(cfg, seed=1)
    take(first, 7)
    state = first.state_dict()
    expected = take(first, 6)
    resumed_loader = ResumableLoader(cfg, seed=1, state=state)
    resumed = take(resumed_loader, 6)
    assert [b["key"] for b in resumed] == [b["key"] for b in expected]
    assert all(torch.equal(r["video"], e["video"]) for r, e in zip(resumed, expected))
    assert resumed_loader.state_dict() == first.state_dict()
    assert first.bad_shards() == [damaged["bad"]]
