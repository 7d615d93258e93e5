"""Reading and checking a corpus in the partitioned layout, on a local disk and in an object store.

A small corpus is written by hand in the layout (``tests/layout_corpus.py``) from real ffmpeg-made
clips: two sources in two partitions, three shards. ``validate`` must call it OK, must report each
kind of damage a corpus can suffer, and must read each shard once; the readers must return exactly
what was written, from a directory and from ``s3://``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import shards.validate
from demo.sample_videos import run_ffmpeg
from shards.layout import INDEX_DIR, MANIFEST_FILE, SHARDS_DIR, shard_locations
from shards.reader import index_batches, iter_samples, read_index, read_manifest, read_rejections
from shards.schema import INDEX_SCHEMA, RECORD_SCHEMA, REJECTION_SCHEMA, to_table
from shards.validate import validate
from storage import Location
from tests.layout_corpus import Clip, s3_bucket_or_skip, upload_tree, write_corpus

CAPTIONS = ["a test card with a moving circle", "colour bars, slowly", "ein Testbild – with ünïcode", "the last one"]
A, B = "0123456789abcdef", "00112233445566ff"  # partition 0 and partition 1 of 2 (shards.layout.partition_of)
A0, A1, A2, B0 = f"{A}_0000", f"{A}_0001", f"{A}_0002", f"{B}_0000"
S0, S1, S2 = "corpus-p00000-000000.tar", "corpus-p00000-000001.tar", "corpus-p00001-000000.tar"
REJECTED = {"source_id": "fedcba9876543210", "source": "/videos/broken.mp4", "stage": "probe",
            "reason": "no_video_stream", "detail": "the file has no video stream"}


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four small real mp4 clips of different lengths (so of different sizes)."""
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for n, seconds in enumerate((0.4, 0.6, 0.8, 0.5)):
        path = root / f"clip{n}.mp4"
        run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=s=160x90:r=25:d={seconds}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)])
        paths.append(path)
    return paths


def clip(path: Path, source: str, n: int, caption: str) -> Clip:
    """Clip ``n`` of ``source`` with a plausible index row."""
    row = {
        "source_id": source, "source": f"/videos/{source}.mp4", "extra": json.dumps({"n": n}),
        "key": f"{source}_{n:04d}", "clip_index": n, "scene_index": 0,
        "start_time": n * 1.5, "end_time": n * 1.5 + 1.0, "start_frame": n * 37, "end_frame": n * 37 + 25,
        "width": 160, "height": 90, "fps": 25.0, "vfr": False, "detector": "adaptive",
        "clip_width": 160, "clip_height": 90, "clip_frames": 25, "extract_mode": "reencode",
        "caption": caption, "stage": "extract",
    }
    return Clip(row, path.read_bytes())


@pytest.fixture
def corpus(tmp_path: Path, clip_files: list[Path]) -> Path:
    """A fresh corpus: A's 3 clips in partition 0 (2 shards of at most 2), B's clip in partition 1."""
    root = tmp_path / "corpus"
    clips = [clip(clip_files[n], A, n, CAPTIONS[n]) for n in range(3)] + [clip(clip_files[3], B, 0, CAPTIONS[3])]
    write_corpus(root, clips, partitions=2, shard_samples=2, rejections=[REJECTED])
    assert [s.name for s in shard_locations(root)] == [S0, S1, S2]
    return root


# --- validate -----------------------------------------------------------------------------------


def test_fresh_corpus_validates(corpus: Path) -> None:
    report = validate(corpus)
    assert report.problems == []
    assert report.ok
    assert (report.shards, report.samples, report.index_rows) == (3, 4, 4)
    assert report.summary() == "3 shards, 4 samples, 4 index rows: OK"


def test_validate_reads_each_shard_once(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sha256 is computed from the same read that checks the samples: one stream per shard."""
    opened: list[str] = []
    real = shards.validate.open_stream

    def counting(location: Location) -> Any:
        opened.append(location.name)
        return real(location)

    monkeypatch.setattr(shards.validate, "open_stream", counting)
    assert validate(corpus).ok
    assert opened == [S0, S1, S2]


def index_file(corpus: Path, partition: str = "p00000") -> Path:
    return corpus / INDEX_DIR / f"{partition}.parquet"


def rewrite_tar(path: Path, keep: Callable[[str], bool], extra: list[tuple[str, bytes]] = ()) -> None:
    """Rewrite the shard at ``path`` with the members ``keep`` accepts, then ``extra`` ones."""
    rebuilt = path.with_name("rebuilt.tar")
    with tarfile.open(path) as old, tarfile.open(rebuilt, "w") as new:
        for member in old.getmembers():
            if keep(member.name):
                new.addfile(member, old.extractfile(member))
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
    rebuilt.replace(path)


def delete_shard(corpus: Path) -> None:
    (corpus / SHARDS_DIR / S1).unlink()


def change_a_byte_of_a_clip_in_a_shard(corpus: Path) -> None:
    path = corpus / SHARDS_DIR / S0
    with tarfile.open(path) as tar:
        offset = tar.getmember(f"{A0}.mp4").offset_data + 100
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def drop_a_txt(corpus: Path) -> None:
    rewrite_tar(corpus / SHARDS_DIR / S0, lambda name: name != f"{A0}.txt")


def copy_a_sample_into_another_shard(corpus: Path) -> None:
    with tarfile.open(corpus / SHARDS_DIR / S0) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.name.startswith(A0)]
    rewrite_tar(corpus / SHARDS_DIR / S1, lambda name: True, members)


def change_the_index(corpus: Path) -> None:
    rows = pq.read_table(index_file(corpus)).to_pylist()
    rows[0]["start_time"] = 99.0
    pq.write_table(to_table(rows, INDEX_SCHEMA), index_file(corpus))


def add_an_index_row(corpus: Path) -> None:
    rows = pq.read_table(index_file(corpus)).to_pylist()
    rows.append({**rows[0], "key": "fedcba9876543210_0000", "source_id": "fedcba9876543210"})
    pq.write_table(to_table(rows, INDEX_SCHEMA), index_file(corpus))


def move_a_row_to_another_partition(corpus: Path) -> None:
    moved = pq.read_table(index_file(corpus, "p00001")).to_pylist()
    pq.write_table(to_table(pq.read_table(index_file(corpus)).to_pylist() + moved, INDEX_SCHEMA), index_file(corpus))
    pq.write_table(INDEX_SCHEMA.empty_table(), index_file(corpus, "p00001"))


def unlist_a_shard(corpus: Path) -> None:
    manifest = json.loads((corpus / MANIFEST_FILE).read_text())
    manifest["shards"] = [s for s in manifest["shards"] if s["name"] != S2]
    (corpus / MANIFEST_FILE).write_text(json.dumps(manifest))


#: tampering -> the exact problems validate must report, partition by partition
TAMPERING: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "shard deleted": (delete_shard, [
        f"{A2}: in index/p00000.parquet but in no shard",
        f"{S1}: listed in manifest.json but missing from shards/",
    ]),
    "byte of a shard changed": (change_a_byte_of_a_clip_in_a_shard, [
        f"{S0}: sha256 differs from manifest.json",
        f"{S0}:{A0}: mp4 sha256 differs from the index",
    ]),
    "sample without txt": (drop_a_txt, [
        f"{S0}: sha256 differs from manifest.json",
        f"{S0}:{A0}: incomplete sample (missing ['txt'], unexpected [])",
    ]),
    "sample in two shards": (copy_a_sample_into_another_shard, [
        f"{S1}: sha256 differs from manifest.json",
        f"{S1}:{A0}: also in {S0}",
        f"{S1}:{A0}: index says shard '{S0}'",
    ]),
    "json differs from index": (change_the_index, [
        f"{S0}:{A0}: json differs from the index in ['start_time']",
    ]),
    "index row without sample": (add_an_index_row, [
        "fedcba9876543210_0000: in index/p00000.parquet but in no shard",
    ]),
    "index row in the wrong partition": (move_a_row_to_another_partition, [
        f"{B0}: its source belongs in partition p00001, not in index/p00000.parquet",
        f"{B0}: in index/p00000.parquet but in no shard",
        f"{S2}:{B0}: not in index/p00001.parquet",
    ]),
    "shard not in manifest": (unlist_a_shard, [
        f"{S2}: not listed in manifest.json",
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


def test_a_shard_that_is_not_a_tar_is_reported_and_the_rest_checked(corpus: Path) -> None:
    (corpus / SHARDS_DIR / S1).write_bytes(b"not a tar" * 1000)
    problems = validate(corpus).problems
    assert problems[0] == f"{S1}: sha256 differs from manifest.json"
    assert problems[1].startswith(f"{S1}: cannot be read as a tar")
    assert problems[2:] == [f"{A2}: in index/p00000.parquet but in no shard"]


def test_copied_corpus_still_validates(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "moved"
    shutil.copytree(corpus, copy)  # nothing in a corpus points at where it was written
    assert validate(copy).ok


# --- reading ------------------------------------------------------------------------------------


def test_iter_samples_yields_every_sample_decoded_in_shard_order(corpus: Path, clip_files: list[Path]) -> None:
    samples = list(iter_samples(corpus))
    assert [s["key"] for s in samples] == [A0, A1, A2, B0]
    index = {r["key"]: r for r in read_index(corpus).to_pylist()}
    for n, sample in enumerate(samples):
        assert sample["mp4"] == clip_files[n].read_bytes()
        assert sample["txt"] == CAPTIONS[n]
        assert sample["json"] == index[sample["key"]]
        assert sample["json"]["clip_sha256"] == hashlib.sha256(sample["mp4"]).hexdigest()
    assert [index[k]["shard"] for k in (A0, A1, A2, B0)] == [S0, S0, S1, S2]
    assert [s["name"] for s in read_manifest(corpus)["shards"]] == [S0, S1, S2]


def test_iter_samples_of_an_empty_corpus_yields_nothing(tmp_path: Path) -> None:
    assert list(iter_samples(tmp_path)) == []


def test_index_is_every_partition_with_no_internal_columns(corpus: Path) -> None:
    index = read_index(corpus)
    assert index.column_names == INDEX_SCHEMA.names
    assert index["key"].to_pylist() == [A0, A1, A2, B0]  # partition order
    assert "clip_path" not in index.column_names and "local_path" not in index.column_names
    assert set(INDEX_SCHEMA.names) < set(RECORD_SCHEMA.names)
    assert read_index(corpus, columns=["key"]).column_names == ["key"]


def test_index_batches_stream_the_asked_columns(corpus: Path) -> None:
    batches = list(index_batches(corpus, ["key", "clip_bytes"], batch_rows=1))
    assert len(batches) == 4 and all(b.num_rows == 1 for b in batches)
    assert all(b.schema.names == ["key", "clip_bytes"] for b in batches)
    assert [b["key"][0].as_py() for b in batches] == read_index(corpus)["key"].to_pylist()


def test_rejections_of_every_partition_and_of_none(corpus: Path, tmp_path: Path) -> None:
    rejections = read_rejections(corpus)
    assert rejections.schema == REJECTION_SCHEMA
    assert [(r["source_id"], r["reason"]) for r in rejections.to_pylist()] == [("fedcba9876543210", "no_video_stream")]
    assert read_rejections(tmp_path).num_rows == 0 and read_rejections(tmp_path).schema == REJECTION_SCHEMA


# --- object store -------------------------------------------------------------------------------


def test_a_corpus_in_an_object_store_reads_and_validates(corpus: Path, request: pytest.FixtureRequest) -> None:
    remote = upload_tree(corpus, f"{s3_bucket_or_skip(request)}/corpus")
    assert remote.uri.startswith("s3://")
    report = validate(remote.uri)
    assert report.problems == [] and (report.shards, report.samples, report.index_rows) == (3, 4, 4)
    assert read_index(remote.uri).equals(read_index(corpus))
    assert read_rejections(remote.uri).equals(read_rejections(corpus))
    assert read_manifest(remote.uri) == read_manifest(corpus)
    assert list(iter_samples(remote.uri)) == list(iter_samples(corpus))

    (remote / SHARDS_DIR / S1).delete()
    assert validate(remote.uri).problems == [f"{A2}: in index/p00000.parquet but in no shard",
                                             f"{S1}: listed in manifest.json but missing from shards/"]
