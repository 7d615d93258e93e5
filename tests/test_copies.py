"""Sources with the same bytes under different names keep their clips once, across partitions and reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest

from curation.config import load_config
from curation.ids import source_id
from curation.pipeline import run_curation
from shards.reader import read_index, read_manifest, read_rejections
from tests.media import one_shot_videos


def config(videos: Path, output: Path):
    cfg = load_config(None, input=str(videos), output=str(output))
    cfg.split.min_duration = 1.0
    cfg.caption.enabled = False
    cfg.filter.enabled = False
    cfg.write.partitions = 8
    return cfg


def sources_in_index(corpus: Path) -> set[str]:
    return set(read_index(corpus)["source_id"].to_pylist())


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    """Three different videos, and two byte-for-byte copies of the first under other names."""
    folder = tmp_path / "videos"
    one_shot_videos(folder, ["a", "b", "c"])
    for name in ("mirror/a.mp4", "a-reupload.mp4"):
        (folder / name).parent.mkdir(exist_ok=True)
        shutil.copy(folder / "a.mp4", folder / name)
    return folder


def keeper_and_copies(videos: Path) -> tuple[str, list[str]]:
    ids = sorted(source_id(str(videos / name)) for name in ("a.mp4", "mirror/a.mp4", "a-reupload.mp4"))
    return ids[0], ids[1:]


@pytest.mark.parametrize("grouping", ["driver", "ray"])
def test_exact_copies_keep_their_clips_once_and_say_whose_they_are(local_ray, videos: Path, tmp_path: Path,
                                                                  monkeypatch, grouping: str):
    if grouping == "ray":  # the distributed grouping a large corpus uses
        monkeypatch.setattr("curation.copies.DRIVER_MAX_SOURCES", 0)
    corpus = tmp_path / "corpus"
    run_curation(config(videos, corpus))

    keeper, copies = keeper_and_copies(videos)
    assert sources_in_index(corpus) == {keeper, source_id(str(videos / "b.mp4")), source_id(str(videos / "c.mp4"))}
    rejected = read_rejections(corpus)
    dedup = rejected.filter(pc.equal(rejected["stage"], "dedup")).to_pylist()
    assert sorted(r["source_id"] for r in dedup) == copies
    assert {(r["reason"], r["duplicate_of"]) for r in dedup} == {("exact_copy", f"{keeper}_0000")}
    assert read_manifest(corpus)["counts"]["rejections_by_reason"] == {"dedup/exact_copy": 2}
    kept_back = sorted(p.parent.name for p in (corpus / "work" / "clips").glob("*/*.mp4"))
    assert kept_back == copies, "only the copies' clips stay in the work area, to come back if their original goes"


def test_a_rerun_rewrites_nothing_and_a_copy_whose_original_left_gets_its_clips_back(local_ray, videos: Path,
                                                                                  tmp_path: Path):
    corpus = tmp_path / "corpus"
    run_curation(config(videos, corpus))
    written = sorted(p.name for p in (corpus / "work" / "written").iterdir())
    manifest = json.loads((corpus / "manifest.json").read_text())

    again = run_curation(config(videos, corpus))
    assert again.partitions == 0
    assert sorted(p.name for p in (corpus / "work" / "written").iterdir()) == written
    assert json.loads((corpus / "manifest.json").read_text())["shards"] == manifest["shards"]

    keeper, copies = keeper_and_copies(videos)
    original = next(n for n in ("a.mp4", "mirror/a.mp4", "a-reupload.mp4") if source_id(str(videos / n)) == keeper)
    (videos / original).unlink()
    run_curation(config(videos, corpus))
    assert copies[0] in sources_in_index(corpus)  # the lowest remaining id is now the one kept
    rejected = read_rejections(corpus)
    assert rejected.filter(pc.equal(rejected["stage"], "dedup"))["source_id"].to_pylist() == [copies[1]]
    assert keeper not in sources_in_index(corpus)
