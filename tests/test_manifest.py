"""Reading the job's input: every manifest format and a directory become the same source rows.

Manifests are parsed with Ray Data's readers, so these tests run a small local Ray (started once for
the module, or reused when another test already started one). ``sources`` puts the public pieces
together as ingest does for one partition: read, ids assigned, de-duplicated (rows sorted by id).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import CurationConfig, DownloadConfig
from curation.ids import source_id
from curation.ingest import ingest
from curation.manifest import SOURCE_COLUMNS, assign_ids, dedupe, source_dataset
from curation.workarea import WorkArea
from shards.layout import partition_name, partition_of
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
    """The input's source rows as one partition of ingest holds them (sorted by source id)."""
    read = pa.Table.from_pylist(source_dataset(CurationConfig(input=str(path), **config)).take_all(),
                                schema=SOURCE_COLUMNS)
    table = dedupe(assign_ids(read, partitions=1))
    assert table.schema == RECORD_SCHEMA
    rows = table.to_pylist()
    assert [r["source_id"] for r in rows] == sorted(r["source_id"] for r in rows)
    assert {r["partition"] for r in rows} <= {0}
    return rows


def by_source(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows of distinct sources by their source (the order of rows is the ids', not the manifest's)."""
    out = {r["source"]: r for r in rows}
    assert len(out) == len(rows), "a source listed twice"
    return out


def ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok"]


def test_csv_carries_extra_columns_as_json(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "url,title,year\n"
        "https://example.com/a.mp4,Alpha,2020\n"
        "/data/b.mkv,Beta,2021\n"
    )
    rows = by_source(sources(manifest, download=DownloadConfig(local_roots=["/data"])))
    assert set(rows) == {"https://example.com/a.mp4", "/data/b.mkv"}
    assert json.loads(rows["https://example.com/a.mp4"]["extra"]) == {"title": "Alpha", "year": 2020}
    assert json.loads(rows["/data/b.mkv"]["extra"]) == {"title": "Beta", "year": 2021}
    assert {s: r["source_id"] for s, r in rows.items()} == {s: source_id(s) for s in rows}
    rows = rows.values()
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["stage"] for r in rows} == {"manifest"}


def test_jsonl(tmp_path: Path) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        json.dumps({"url": "https://example.com/a.mp4", "caption_hint": "a dog"}) + "\n"
        + json.dumps({"url": "https://example.com/b.mp4", "caption_hint": "a cat"}) + "\n"
    )
    rows = by_source(sources(manifest))
    assert {s: json.loads(r["extra"]) for s, r in rows.items()} == {
        "https://example.com/a.mp4": {"caption_hint": "a dog"}, "https://example.com/b.mp4": {"caption_hint": "a cat"}}


def test_parquet(tmp_path: Path) -> None:
    manifest = tmp_path / "list.parquet"
    pq.write_table(pa.table({"url": ["https://example.com/a.mp4", "https://example.com/b.mp4"],
                             "licence": ["cc-by", None]}), manifest)
    rows = by_source(sources(manifest))
    assert {s: json.loads(r["extra"]) for s, r in rows.items()} == {
        "https://example.com/a.mp4": {"licence": "cc-by"}, "https://example.com/b.mp4": {}}  # nulls are left out


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
    rows = by_source(sources(manifest))
    assert {s: r["extra"] for s, r in rows.items()} == {"https://example.com/a.mp4": "{}",
                                                        "https://example.com/b.mp4": "{}"}


def test_relative_paths_are_relative_to_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "lists"
    folder.mkdir(parents=True)
    manifest = folder / "list.csv"
    manifest.write_text("url\nvideos/a.mp4\n../b.mp4\n/abs/c.mp4\nhttps://example.com/d.mp4\n")
    monkeypatch.chdir(tmp_path)  # somewhere else: the working directory must not matter
    rows = sources(manifest)
    assert sorted(r["source"] for r in rows) == sorted([
        str((folder / "videos" / "a.mp4").resolve()),
        str((tmp_path / "project" / "b.mp4").resolve()),
        "/abs/c.mp4",
        "https://example.com/d.mp4",
    ])


def test_directory_input_picks_video_files_recursively(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    for name in ["a.mp4", "sub/b.MKV", "sub/deeper/c.webm", "notes.txt", "a.mp4.json", "sub/d.json",
                 ".hidden.mp4", "cover.jpg"]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really a video")
    rows = sources(root)
    assert sorted(r["source"] for r in rows) == [
        str((root / "a.mp4").resolve()),
        str((root / "sub/b.MKV").resolve()),
        str((root / "sub/deeper/c.webm").resolve()),
    ]
    assert [r["extra"] for r in rows] == ["{}"] * 3


def test_directory_without_videos_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="holds no file"):
        sources(tmp_path)


def test_duplicates_become_rejected_rows_with_distinct_ids(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text("https://example.com/a.mp4\nhttps://example.com/b.mp4\nhttps://example.com/a.mp4\n"
                        "https://example.com/a.mp4\n")
    rows = sources(manifest)
    sid = source_id("https://example.com/a.mp4")
    assert sorted((r["source"], r["status"]) for r in rows) == [
        ("https://example.com/a.mp4", "ok"), ("https://example.com/a.mp4", "rejected"),
        ("https://example.com/a.mp4", "rejected"), ("https://example.com/b.mp4", "ok"),
    ]
    repeats = [r for r in rows if r["status"] == "rejected"]
    assert all(r["reason"] == "duplicate" and r["stage"] == "manifest" and r["detail"] for r in repeats)
    ids = [r["source_id"] for r in rows]
    assert len(set(ids)) == len(ids)  # every row can be told apart downstream
    assert sorted(r["source_id"] for r in repeats) == [f"{sid}-dup1", f"{sid}-dup2"]
    assert sorted(r["source_id"] for r in ok(rows)) == sorted([sid, source_id("https://example.com/b.mp4")])


def test_the_copy_kept_of_a_duplicate_does_not_depend_on_manifest_order(tmp_path: Path) -> None:
    """Of the copies of a source, the one with the smallest extra columns is kept, wherever it is listed."""
    kept = []
    for order in (["Zeta", "Alpha", "Mu"], ["Alpha", "Mu", "Zeta"], ["Mu", "Zeta", "Alpha"]):
        manifest = tmp_path / f"{order[0]}.csv"
        manifest.write_text("url,title\n" + "".join(f"https://example.com/a.mp4,{t}\n" for t in order)
                            + "https://example.com/b.mp4,Beta\n")
        rows = sources(manifest)
        [a] = [r for r in ok(rows) if r["source"] == "https://example.com/a.mp4"]
        assert a["source_id"] == source_id("https://example.com/a.mp4")
        kept.append(json.loads(a["extra"]))
        repeats = sorted((r["source_id"], json.loads(r["extra"])["title"]) for r in rows if r["status"] != "ok")
        assert [t for _, t in repeats] == ["Mu", "Zeta"] and all(r[1] for r in repeats)
        assert all(r["reason"] == "duplicate" for r in rows if r["status"] != "ok")
    assert kept == [{"title": "Alpha"}] * 3


def test_same_file_by_relative_and_absolute_path_is_a_duplicate(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"a.mp4\n{tmp_path / 'a.mp4'}\n")
    rows = sources(manifest)
    assert sorted(r["status"] for r in rows) == ["ok", "rejected"]
    assert {r["source"] for r in rows} == {str((tmp_path / "a.mp4").resolve())}
    [repeat] = [r for r in rows if r["status"] == "rejected"]
    assert repeat["reason"] == "duplicate"


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


def test_an_empty_manifest_is_a_clear_error(tmp_path: Path) -> None:
    for name, text in [("list.csv", "url\n"), ("list.txt", "# nothing yet\n\n"), ("list.jsonl", ""),
                       ("blank.jsonl", "\n  \n")]:
        manifest = tmp_path / name
        manifest.write_text(text)
        output = tmp_path / f"out-{name}"
        cfg = CurationConfig(input=str(manifest), output=str(output))
        with pytest.raises(ValueError, match="lists no source"):
            ingest(cfg, WorkArea.of(output))
        assert not WorkArea.of(output).partition_sources(0).exists()


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-driver", "ray-shuffle"])
def test_ingest_writes_one_sources_object_per_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        shuffle: bool) -> None:
    if shuffle:  # the path of large inputs: partitioned by a distributed groupby
        monkeypatch.setattr("curation.ingest.DRIVER_INGEST_MAX_SOURCES", 0)
    urls = [f"https://example.com/v{i:02d}.mp4" for i in range(40)]
    manifest = tmp_path / "list.txt"
    manifest.write_text("\n".join([*urls, urls[7]]) + "\n")  # one listed twice: its copies meet in one partition
    cfg = CurationConfig(input=str(manifest), output=str(tmp_path / "out"))
    cfg.write.partitions = 4
    work = WorkArea.of(tmp_path / "out")
    table, partitions = ingest(cfg, work)
    assert partitions == 4
    listed = table.to_pylist()
    objects = sorted(f.name for f in work.sources.files() if f.name.startswith("p"))
    assert objects == [f"{partition_name(r['partition'])}.parquet" for r in listed]
    assert len(listed) > 1 and [r["partition"] for r in listed] == sorted(r["partition"] for r in listed)
    seen = []
    for entry in listed:
        partition = entry["partition"]
        rows = work.read_sources(partition).to_pylist()
        assert len(rows) == entry["sources"] > 0
        assert {r["partition"] for r in rows} == {partition}
        assert {partition_of(source_id(r["source"]), 4) for r in rows} == {partition}
        assert all(partition_of(r["source_id"], 4) == partition for r in rows if r["status"] == "ok")
        seen += rows
    assert sum(r["sources"] for r in listed) == len(seen) == 41
    assert sorted(r["source"] for r in seen if r["status"] == "ok") == sorted(urls)
    [repeat] = [r for r in seen if r["status"] == "rejected"]
    assert (repeat["source"], repeat["reason"]) == (urls[7], "duplicate")


def test_an_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    for folder in (tmp_path / "empty", tmp_path / "no-videos"):
        folder.mkdir()
    (tmp_path / "no-videos" / "notes.txt").write_text("no video here")
    for folder in (tmp_path / "empty", tmp_path / "no-videos"):
        output = tmp_path / f"out-{folder.name}"
        with pytest.raises(ValueError, match="holds no file .*nothing to curate"):
            ingest(CurationConfig(input=str(folder), output=str(output)), WorkArea.of(output))
        assert not WorkArea.of(output).partition_sources(0).exists()


# --- local sources are confined to the input's directory ----------------------------------------------


def test_local_sources_outside_the_manifest_directory_are_rejected(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (tmp_path / "outside.mp4").write_bytes(b"x")
    manifest = lists / "list.txt"
    manifest.write_text("a.mp4\nsub/b.mp4\n../outside.mp4\n/etc/passwd\nfile:///etc/shadow\n"
                        "https://example.com/c.mp4\n")
    rows = by_source(sources(manifest))
    refused = {s: r for s, r in rows.items() if r["status"] != "ok"}
    assert set(refused) == {str(tmp_path / "outside.mp4"), "/etc/passwd", "/etc/shadow"}
    for row in refused.values():
        assert (row["stage"], row["reason"]) == ("manifest", "outside_roots")
        assert "download.local_roots" in row["detail"] and str(lists) in row["detail"]
    assert {s for s, r in rows.items() if r["status"] == "ok"} == {
        str(lists / "a.mp4"), str(lists / "sub" / "b.mp4"), "https://example.com/c.mp4"}
    # download.local_roots replaces the default: the listed directories, and only them
    rows = by_source(sources(manifest, download=DownloadConfig(local_roots=[str(tmp_path)])))
    assert {s for s, r in rows.items() if r["status"] != "ok"} == {"/etc/passwd", "/etc/shadow"}


def test_directory_symlinks_out_are_rejected_and_broken_ones_kept(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "a.mp4").write_bytes(b"x")
    (elsewhere / "secret.mp4").write_bytes(b"x")
    (root / "escape.mp4").symlink_to(elsewhere / "secret.mp4")
    (root / "loop1.mp4").symlink_to(root / "loop2.mp4")
    (root / "loop2.mp4").symlink_to(root / "loop1.mp4")
    (root / "dangling.mp4").symlink_to(root / "gone.mp4")
    (root / "sub" / "up").symlink_to(root)  # a directory loop: listed once, not forever
    rows = by_source(sources(root))
    assert set(rows) == {str(root / n) for n in ("a.mp4", "escape.mp4", "loop1.mp4", "loop2.mp4", "dangling.mp4")}
    assert rows[str(root / "escape.mp4")]["reason"] == "outside_roots"
    # kept, for download to record as broken_link (tests/test_download.py) instead of vanishing
    assert all(rows[str(root / n)]["status"] == "ok" for n in ("a.mp4", "loop1.mp4", "loop2.mp4", "dangling.mp4"))


def test_a_path_and_its_file_url_are_one_source(tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    path = tmp_path / "a b.mp4"
    manifest.write_text(f"{path}\n{path.as_uri()}\nfile://localhost{path.as_uri()[len('file://'):]}\na b.mp4\n")
    rows = sources(manifest)
    assert {r["source"] for r in rows} == {str(path)}
    assert sorted(r["status"] for r in rows) == ["ok", "rejected", "rejected", "rejected"]
    assert [r["source_id"] for r in ok(rows)] == [source_id(str(path))]
    assert {r["reason"] for r in rows if r["status"] != "ok"} == {"duplicate"}


# --- extra columns are strict JSON ------------------------------------------------------------------


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_extra_is_strict_json_without_nan_or_infinity(tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("url,score,gain\nhttps://example.com/a.mp4,nan,inf\nhttps://example.com/b.mp4,0.5,-inf\n")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text('{"url": "https://example.com/c.mp4", "score": NaN, "deep": {"x": [Infinity, 1]}}\n')
    extras = {r["source"]: _strict(r["extra"]) for r in sources(csv) + sources(jsonl)}
    assert extras == {  # a non-finite cell is an empty one (left out, as nulls are); nested ones become null
        "https://example.com/a.mp4": {},
        "https://example.com/b.mp4": {"score": 0.5},
        "https://example.com/c.mp4": {"deep": {"x": [None, 1]}},
    }


def test_jsonl_values_keep_their_json_types(tmp_path: Path) -> None:
    """``true`` stays a boolean even where the same key holds numbers or strings in other rows."""
    manifest = tmp_path / "list.jsonl"
    lines = [{"url": "https://example.com/a.mp4", "flag": True, "n": 1},
             {"url": "https://example.com/b.mp4", "flag": 1.5, "n": "one"},
             {"url": "https://example.com/c.mp4", "flag": False, "tags": ["x", "y"]}]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    extras = {r["source"]: _strict(r["extra"]) for r in sources(manifest)}
    assert extras == {line["url"]: {k: v for k, v in line.items() if k != "url"} for line in lines}
    assert extras["https://example.com/a.mp4"]["flag"] is True


def test_jsonl_without_the_url_key_names_the_keys(tmp_path: Path) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text('{"link": "https://example.com/a.mp4", "title": "A"}\n')
    with pytest.raises(ValueError, match=r"no 'url' key \(\['link', 'title'\]\)"):
        sources(manifest)
