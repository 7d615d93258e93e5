"""Reading the job's input: every manifest format and a directory become the same source rows.

Manifests are parsed with Ray Data's readers, so these tests run a small local Ray (started once for
the module, or reused when another test already started one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import CurationConfig
from curation.ids import source_id
from curation.manifest import read_sources
from shards.schema import RECORD_SCHEMA


@pytest.fixture(scope="module", autouse=True)
def ray_for_readers() -> Iterator[None]:
    import ray

    if ray.is_initialized():  # another module's Ray: use it and leave it running
        yield
        return
    # address="local": always a private Ray, never a cluster some other process left running here
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def sources(path: Path, **config: Any) -> list[dict[str, Any]]:
    table = read_sources(CurationConfig(input=str(path), **config))
    assert table.schema == RECORD_SCHEMA
    return table.to_pylist()


def ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok"]


def test_csv_carries_extra_columns_as_json(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "url,title,year\n"
        "https://example.com/a.mp4,Alpha,2020\n"
        "/data/b.mkv,Beta,2021\n"
    )
    rows = sources(manifest)
    assert [r["source"] for r in rows] == ["https://example.com/a.mp4", "/data/b.mkv"]
    assert [json.loads(r["extra"]) for r in rows] == [{"title": "Alpha", "year": 2020}, {"title": "Beta", "year": 2021}]
    assert [r["source_id"] for r in rows] == [source_id("https://example.com/a.mp4"), source_id("/data/b.mkv")]
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["stage"] for r in rows} == {"manifest"}


def test_jsonl(tmp_path: Path) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        json.dumps({"url": "https://example.com/a.mp4", "caption_hint": "a dog"}) + "\n"
        + json.dumps({"url": "https://example.com/b.mp4", "caption_hint": "a cat"}) + "\n"
    )
    rows = sources(manifest)
    assert [r["source"] for r in rows] == ["https://example.com/a.mp4", "https://example.com/b.mp4"]
    assert [json.loads(r["extra"]) for r in rows] == [{"caption_hint": "a dog"}, {"caption_hint": "a cat"}]


def test_parquet(tmp_path: Path) -> None:
    manifest = tmp_path / "list.parquet"
    pq.write_table(pa.table({"url": ["https://example.com/a.mp4", "https://example.com/b.mp4"],
                             "licence": ["cc-by", None]}), manifest)
    rows = sources(manifest)
    assert [r["source"] for r in rows] == ["https://example.com/a.mp4", "https://example.com/b.mp4"]
    assert [json.loads(r["extra"]) for r in rows] == [{"licence": "cc-by"}, {}]  # nulls are left out


def test_txt_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text(
        "# my videos\n"
        "https://example.com/a.mp4\n"
        "\n"
        "   \n"
        "  # an indented comment\n"
        "  https://example.com/b.mp4  \n"
    )
    rows = sources(manifest)
    assert [r["source"] for r in rows] == ["https://example.com/a.mp4", "https://example.com/b.mp4"]
    assert [r["extra"] for r in rows] == ["{}", "{}"]


def test_relative_paths_are_relative_to_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "lists"
    folder.mkdir(parents=True)
    manifest = folder / "list.csv"
    manifest.write_text("url\nvideos/a.mp4\n../b.mp4\n/abs/c.mp4\nhttps://example.com/d.mp4\n")
    monkeypatch.chdir(tmp_path)  # somewhere else: the working directory must not matter
    rows = sources(manifest)
    assert [r["source"] for r in rows] == [
        str((folder / "videos" / "a.mp4").resolve()),
        str((tmp_path / "project" / "b.mp4").resolve()),
        "/abs/c.mp4",
        "https://example.com/d.mp4",
    ]


def test_directory_input_picks_video_files_recursively(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for name in ["a.mp4", "sub/b.MKV", "sub/deeper/c.webm", "notes.txt", "a.mp4.json", "sub/d.json",
                 ".hidden.mp4", "cover.jpg"]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really a video")
    rows = sources(root)
    assert [r["source"] for r in rows] == [
        str((root / "a.mp4").resolve()),
        str((root / "sub/b.MKV").resolve()),
        str((root / "sub/deeper/c.webm").resolve()),
    ]
    assert [r["extra"] for r in rows] == ["{}"] * 3


def test_directory_without_videos_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="holds no files"):
        sources(tmp_path)


def test_duplicates_become_rejected_rows_with_distinct_ids(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text("https://example.com/a.mp4\nhttps://example.com/b.mp4\nhttps://example.com/a.mp4\n"
                        "https://example.com/a.mp4\n")
    rows = sources(manifest)
    sid = source_id("https://example.com/a.mp4")
    assert [(r["source"], r["status"]) for r in rows] == [
        ("https://example.com/a.mp4", "ok"), ("https://example.com/b.mp4", "ok"),
        ("https://example.com/a.mp4", "rejected"), ("https://example.com/a.mp4", "rejected"),
    ]
    assert rows[0]["source_id"] == sid
    repeats = rows[2:]
    assert all(r["reason"] == "duplicate" and r["stage"] == "manifest" and r["detail"] for r in repeats)
    ids = [r["source_id"] for r in rows]
    assert len(set(ids)) == len(ids)  # every row can be told apart downstream
    assert all(r["source_id"].startswith(sid) for r in repeats)
    assert [r["source_id"] for r in ok(rows)] == [sid, source_id("https://example.com/b.mp4")]


def test_same_file_by_relative_and_absolute_path_is_a_duplicate(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"a.mp4\n{tmp_path / 'a.mp4'}\n")
    rows = sources(manifest)
    assert [r["status"] for r in rows] == ["ok", "rejected"]
    assert rows[1]["reason"] == "duplicate"


def test_missing_url_column_names_the_columns(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text("link,title\nhttps://example.com/a.mp4,Alpha\n")
    with pytest.raises(ValueError) as caught:
        sources(manifest)
    message = str(caught.value)
    assert "'url'" in message
    assert "['link', 'title']" in message


def test_url_column_can_be_configured(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text("link,title\nhttps://example.com/a.mp4,Alpha\n")
    rows = sources(manifest, url_column="link")
    assert [(r["source"], json.loads(r["extra"])) for r in rows] == [("https://example.com/a.mp4", {"title": "Alpha"})]


def test_nonexistent_input_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources(tmp_path / "nowhere.csv")


def test_unknown_manifest_type_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "list.xlsx"
    manifest.write_text("url\n")
    with pytest.raises(ValueError, match="unknown manifest type"):
        sources(manifest)
