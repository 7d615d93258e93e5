"""WebDataset shards: planned deterministically, written byte-identically, checked by ``validate``.

A tiny corpus is written the way the write stage writes one (``plan_shards``, ``write_shard``,
``write_index``, ``write_manifest``) from real ffmpeg-made clips; ``validate`` must call it OK, and
must report each kind of damage a corpus can suffer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from curation.sample_videos import run_ffmpeg
from shards.hashing import file_sha256
from shards.layout import INDEX_FILE, MANIFEST_FILE, SHARDS_DIR, shard_name, shard_paths
from shards.reader import iter_samples, read_index, read_manifest
from shards.schema import INDEX_SCHEMA, RECORD_SCHEMA, to_table
from shards.validate import validate
from shards.writer import Sample, plan_shards, sample_from_row, write_index, write_manifest, write_shard

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


def write_corpus(root: Path, clip_files: list[Path], target_bytes: int) -> list[dict[str, Any]]:
    """Write a corpus of ``clip_files`` into ``root``; return the index rows."""
    rows = [clip_row(p, n) for n, p in enumerate(clip_files)]
    for row, number in zip(rows, plan_shards([r["clip_bytes"] for r in rows], target_bytes)):
        row["shard"] = shard_name("corpus", number)
    entries = []
    for name in sorted({r["shard"] for r in rows}):
        entries.append(write_shard(root / SHARDS_DIR / name, [sample_from_row(r) for r in rows if r["shard"] == name]))
    write_index(root, to_table(rows), to_table([]))
    write_manifest(root, {"format": "videofactory-webdataset/1", "shards": entries})
    return rows


@pytest.fixture
def corpus(tmp_path: Path, clip_files: list[Path]) -> Path:
    """A fresh corpus of 3 samples in 2 shards (the first two clips fill the first shard)."""
    root = tmp_path / "corpus"
    sizes = [p.stat().st_size for p in clip_files]
    write_corpus(root, clip_files, target_bytes=sizes[0] + sizes[1] + 4096)
    assert [p.name for p in shard_paths(root)] == ["corpus-000000.tar", "corpus-000001.tar"]
    return root


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


def samples_of(clip_files: list[Path]) -> list[Sample]:
    return [sample_from_row(clip_row(p, n)) for n, p in enumerate(clip_files)]


def test_same_samples_give_byte_identical_shards(tmp_path: Path, clip_files: list[Path]) -> None:
    first = write_shard(tmp_path / "a" / "corpus-000000.tar", samples_of(clip_files))
    second = write_shard(tmp_path / "b" / "corpus-000000.tar", samples_of(clip_files))
    assert first == second
    assert first["sha256"] == file_sha256(tmp_path / "b" / "corpus-000000.tar")
    assert first["samples"] == 3
    assert (tmp_path / "a" / "corpus-000000.tar").read_bytes() == (tmp_path / "b" / "corpus-000000.tar").read_bytes()


def test_rewriting_an_identical_shard_keeps_the_file(tmp_path: Path, clip_files: list[Path]) -> None:
    path = tmp_path / "corpus-000000.tar"
    entry = write_shard(path, samples_of(clip_files))
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # an unmistakable mtime
    inode = path.stat().st_ino

    assert write_shard(path, samples_of(clip_files)) == entry
    assert path.stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert path.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus-000000.tar"]  # no partial file left


def test_a_shard_with_other_members_is_rewritten(tmp_path: Path, clip_files: list[Path]) -> None:
    path = tmp_path / "corpus-000000.tar"
    old = write_shard(path, samples_of(clip_files))
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    fewer = write_shard(path, samples_of(clip_files)[:2])
    assert fewer["samples"] == 2 and fewer["sha256"] != old["sha256"]
    assert path.stat().st_mtime_ns != 1_000_000_000_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus-000000.tar"]


def test_shard_members_are_the_samples_files_with_a_fixed_mtime(tmp_path: Path, clip_files: list[Path]) -> None:
    path = tmp_path / "corpus-000000.tar"
    samples = samples_of(clip_files)
    write_shard(path, samples)
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


# --- validate -----------------------------------------------------------------------------------


def test_fresh_corpus_validates(corpus: Path) -> None:
    report = validate(corpus)
    assert report.problems == []
    assert report.ok
    assert (report.shards, report.samples, report.index_rows) == (2, 3, 3)
    assert report.summary() == "2 shards, 3 samples, 3 index rows: OK"


def first_key(corpus: Path) -> str:
    return read_index(corpus)["key"][0].as_py()


def delete_shard(corpus: Path) -> None:
    (corpus / SHARDS_DIR / "corpus-000001.tar").unlink()


def change_a_byte_of_a_clip_in_a_shard(corpus: Path) -> None:
    path = corpus / SHARDS_DIR / "corpus-000000.tar"
    with tarfile.open(path) as tar:
        offset = tar.getmember(f"{first_key(corpus)}.mp4").offset_data + 100
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def drop_a_txt(corpus: Path) -> None:
    path = corpus / SHARDS_DIR / "corpus-000000.tar"
    rebuilt = path.with_name("rebuilt.tar")
    with tarfile.open(path) as old, tarfile.open(rebuilt, "w") as new:
        for member in old.getmembers():
            if member.name != f"{first_key(corpus)}.txt":
                new.addfile(member, old.extractfile(member))
    rebuilt.replace(path)


def change_the_index(corpus: Path) -> None:
    table = pq.read_table(corpus / INDEX_FILE)
    rows = table.to_pylist()
    rows[0]["start_time"] = 99.0
    pq.write_table(to_table(rows, INDEX_SCHEMA), corpus / INDEX_FILE)


def add_an_index_row(corpus: Path) -> None:
    rows = pq.read_table(corpus / INDEX_FILE).to_pylist()
    rows.append({**rows[0], "key": "fedcba9876543210_0000", "source_id": "fedcba9876543210"})
    pq.write_table(to_table(rows, INDEX_SCHEMA), corpus / INDEX_FILE)


def unlist_a_shard(corpus: Path) -> None:
    manifest = json.loads((corpus / MANIFEST_FILE).read_text())
    manifest["shards"] = [s for s in manifest["shards"] if s["name"] != "corpus-000001.tar"]
    (corpus / MANIFEST_FILE).write_text(json.dumps(manifest))


K0 = "0123456789abcdef_0000"
K2 = "0123456789abcdef_0002"

#: tampering -> the exact problems validate must report
TAMPERING: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "shard deleted": (delete_shard, [
        "corpus-000001.tar: listed in manifest.json but missing from shards/",
        f"{K2}: in index.parquet but in no shard",
    ]),
    "byte of a shard changed": (change_a_byte_of_a_clip_in_a_shard, [
        "corpus-000000.tar: sha256 differs from manifest.json",
        f"corpus-000000.tar:{K0}: mp4 sha256 differs from the index",
    ]),
    "sample without txt": (drop_a_txt, [
        "corpus-000000.tar: sha256 differs from manifest.json",
        f"corpus-000000.tar:{K0}: incomplete sample (missing ['txt'], unexpected [])",
    ]),
    "json differs from index": (change_the_index, [
        f"corpus-000000.tar:{K0}: json differs from the index in ['start_time']",
    ]),
    "index row without sample": (add_an_index_row, [
        "fedcba9876543210_0000: in index.parquet but in no shard",
    ]),
    "shard not in manifest": (unlist_a_shard, [
        "corpus-000001.tar: not listed in manifest.json",
    ]),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_validate_reports_tampering(case: str, corpus: Path) -> None:
    tamper, expected = TAMPERING[case]
    tamper(corpus)
    report = validate(corpus)
    assert not report.ok
    assert report.problems == expected
    assert f"{len(expected)} problem(s)" in report.summary()


# --- reading ------------------------------------------------------------------------------------


def test_iter_samples_yields_every_sample_decoded(corpus: Path, clip_files: list[Path]) -> None:
    samples = list(iter_samples(corpus))
    index = read_index(corpus).to_pylist()
    assert [s["key"] for s in samples] == [r["key"] for r in index] == [f"0123456789abcdef_{n:04d}" for n in range(3)]
    for n, sample in enumerate(samples):
        assert sample["mp4"] == clip_files[n].read_bytes()
        assert sample["txt"] == CAPTIONS[n]
        assert isinstance(sample["json"], dict)
        assert sample["json"]["key"] == sample["key"]
        assert sample["json"]["clip_sha256"] == hashlib.sha256(sample["mp4"]).hexdigest()
        assert json.loads(sample["json"]["extra"]) == {"n": n}
    assert [s["shard"] for s in index] == ["corpus-000000.tar", "corpus-000000.tar", "corpus-000001.tar"]
    assert [s["name"] for s in read_manifest(corpus)["shards"]] == ["corpus-000000.tar", "corpus-000001.tar"]


def test_iter_samples_of_an_empty_corpus_yields_nothing(tmp_path: Path) -> None:
    assert list(iter_samples(tmp_path)) == []


def test_index_has_no_internal_columns(corpus: Path) -> None:
    names = read_index(corpus).column_names
    assert names == INDEX_SCHEMA.names
    assert "clip_path" not in names and "local_path" not in names
    assert set(INDEX_SCHEMA.names) < set(RECORD_SCHEMA.names)


def test_copied_corpus_still_validates(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "moved"
    shutil.copytree(corpus, copy)  # nothing in a corpus points at where it was written
    assert validate(copy).ok
