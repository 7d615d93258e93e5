"""The shard writer: shards planned deterministically and written byte-identically.

(Split out of tests/test_shards.py, which now tests the readers on hand-built corpora; these tests
import ``shards.writer`` and follow its API.)
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from demo.sample_videos import run_ffmpeg
from shards.hashing import file_sha256
from shards.schema import INDEX_SCHEMA
from shards.writer import Sample, content_digest, plan_shards, sample_from_row, write_shard

CAPTIONS = ["a test card with a moving circle", "colour bars, slowly", "ein Testbild – with ünïcode"]


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small real mp4 clips of different lengths (so of different sizes)."""
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for n, seconds in enumerate((0.4, 0.6, 0.8)):
        path = root / f"clip{n}.mp4"
        run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s=160x90:r=25:d={seconds}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)])
        paths.append(path)
    return paths


def clip_row(path: Path, n: int) -> dict[str, Any]:
    """An index row (plus the internal ``clip_path``) for clip ``n``."""
    return {
        "source_id": "0123456789abcdef", "source": "/videos/source.mp4", "extra": json.dumps({"n": n}),
        "key": f"0123456789abcdef_{n:04d}", "clip_index": n, "scene_index": 0,
        "start_time": n * 1.5, "end_time": n * 1.5 + 1.0, "start_frame": n * 37, "end_frame": n * 37 + 25,
        "width": 160, "height": 90, "fps": 25.0, "vfr": False, "detector": "adaptive",
        "clip_path": str(path), "clip_sha256": file_sha256(path), "clip_bytes": path.stat().st_size,
        "clip_width": 160, "clip_height": 90, "clip_frames": 25, "extract_mode": "reencode",
        "caption": CAPTIONS[n], "status": "ok", "stage": "extract",
    }


# --- planning -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes, target, expected",
    [
        ([], 100, []),
        ([10, 10, 10], 1000, [0, 0, 0]),
        ([10, 10, 10], 25, [0, 0, 1]),
        ([10, 15, 5], 25, [0, 0, 1]),  # exactly reaching the target still fits
        ([30, 10, 10], 25, [0, 1, 1]),  # a sample larger than the target gets a shard of its own
        ([10, 30, 10], 25, [0, 1, 2]),
        ([5] * 7, 10, [0, 0, 1, 1, 2, 2, 3]),
    ],
)
def test_plan_shards(sizes: list[int], target: int, expected: list[int]) -> None:
    assert plan_shards(sizes, target) == expected


# --- writing ------------------------------------------------------------------------------------


def samples_of(clip_files: list[Path]) -> list[tuple[Sample, bytes]]:
    return [(sample_from_row(clip_row(p, n)), p.read_bytes()) for n, p in enumerate(clip_files)]


def test_same_samples_give_byte_identical_shards(tmp_path: Path, clip_files: list[Path]) -> None:
    write_shard(tmp_path / "a" / "corpus-p00000-000000.tar", samples_of(clip_files))
    write_shard(tmp_path / "b" / "corpus-p00000-000000.tar", samples_of(clip_files))
    first, second = (tmp_path / d / "corpus-p00000-000000.tar" for d in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    assert file_sha256(first) == file_sha256(second)


def test_the_content_digest_changes_exactly_when_the_shard_bytes_would(tmp_path: Path,
                                                                       clip_files: list[Path]) -> None:
    samples = [s for s, _ in samples_of(clip_files)]
    videos = [file_sha256(p) for p in clip_files]
    assert content_digest(samples, videos) == content_digest([s for s, _ in samples_of(clip_files)], videos)
    recaptioned = [Sample(samples[0].key, "another caption", samples[0].metadata), *samples[1:]]
    assert content_digest(recaptioned, videos) != content_digest(samples, videos)
    assert content_digest(samples, [videos[1], videos[0], videos[2]]) != content_digest(samples, videos)
    assert content_digest(samples[:2], videos[:2]) != content_digest(samples, videos)


def test_shard_members_are_the_samples_files_with_a_fixed_mtime(tmp_path: Path, clip_files: list[Path]) -> None:
    path = tmp_path / "corpus-p00000-000000.tar"
    pairs = samples_of(clip_files)
    write_shard(path, pairs)
    samples = [s for s, _ in pairs]
    with tarfile.open(path) as tar:
        members = {m.name: (m.mtime, tar.extractfile(m).read()) for m in tar.getmembers()}
    assert sorted(members) == sorted(f"{s.key}.{ext}" for s in samples for ext in ("mp4", "txt", "json"))
    assert {mtime for mtime, _ in members.values()} == {0}
    first = samples[0]
    assert members[f"{first.key}.mp4"][1] == clip_files[0].read_bytes()
    assert members[f"{first.key}.txt"][1].decode("utf-8") == CAPTIONS[0]
    meta = json.loads(members[f"{first.key}.json"][1])
    assert set(meta) == set(INDEX_SCHEMA.names)  # the index row: no internal columns such as clip_path
    assert meta["key"] == first.key and meta["caption"] == CAPTIONS[0]
