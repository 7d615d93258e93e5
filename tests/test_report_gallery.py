"""The report's gallery: strips of real frames of kept clips (from the shards) and of rejected clips per reason
(from ``work/clips`` while their files exist), each with its scores, checked in headless Chromium.

The corpus is written by hand in the layout (no pipeline, no Ray); its rows come from the real filter.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.workarea import WorkArea
from stats.gallery import FRAMES, WIDTH, collect_gallery
from stats.report import REPORT_FILE, write_report
from tests.layout_corpus import Clip, write_corpus
from tests.test_filters_record import filter_config, judge, make_clips


@pytest.fixture(scope="module")
def judged_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kept clips in shards (two copies of the moving clip under two sources); the still (``filter/static``) and the
    4:3 clip (``filter/aspect_ratio``) rejected, only the still's file left in ``work/clips`` as keep_clips leaves
    it; one source rejected whole at the screen."""
    clips = make_clips(tmp_path_factory.mktemp("gallery-clips"))
    rows = judge(clips, filter_config())
    assert rows["still"]["reason"] == "static" and rows["four_three"]["reason"] == "aspect_ratio"
    assert rows["moving"].get("status") != "rejected"
    root = tmp_path_factory.mktemp("gallery") / "corpus"
    kept = [Clip({**rows["moving"], "source_id": sid, "key": f"{sid}_0000", "caption": f"a test pattern {sid}",
                  "clip_width": 1280, "clip_height": 720, "clip_fps": 25.0}, clips["moving"].read_bytes())
            for sid in ("aaaa", "bbbb")]
    rejected = [{**rows[name], "source_id": sid, "key": f"{sid}_0000", "stage": "filter"}
                for name, sid in (("still", "cccc"), ("four_three", "dddd"))]
    whole = {"source_id": "eeee", "stage": "screen", "reason": "low_resolution", "detail": "720 > 480"}
    scene = {"source_id": "aaaa", "stage": "split", "reason": "too_short", "start_time": 9.0, "end_time": 10.0}
    write_corpus(root, kept, partitions=2, shard_samples=1, rejections=[*rejected, whole, scene])
    work = WorkArea.of(root)
    work.clip_location("cccc", "cccc_0000").upload_from(Path(shutil.copy(clips["still"], root.parent / "s.mp4")))
    return root


def _pixels(uri: str) -> np.ndarray:
    header, data = uri.split(",", 1)
    assert header == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"))


def test_gallery_samples_kept_and_rejected_clips_with_their_scores(judged_corpus: Path) -> None:
    gallery = collect_gallery(judged_corpus)
    assert sorted(t.key for t in gallery.kept) == ["aaaa_0000", "bbbb_0000"], "the first clip of each shard"
    for thumb in gallery.kept:
        strip = _pixels(thumb.strip)
        # FRAMES frames of WIDTH px side by side (2 px apart); a 16:9 clip gives frames WIDTH * 9 / 16 high
        assert strip.shape == (round(WIDTH * 9 / 16), FRAMES * WIDTH + 2 * (FRAMES - 1), 3)
        assert strip.std() > 30, "the test pattern's colours, not a blank strip"
        assert thumb.caption.startswith("a test pattern")
        rules = {rule: passed for rule, _, _, passed in thumb.checks}
        assert rules["static"] and rules["low_resolution"] and all(rules.values())
    strip = _pixels(gallery.kept[0].strip).astype(int)
    assert np.abs(strip[:, :WIDTH] - strip[:, -WIDTH:]).mean() > 5, "the first and last frames are of other times"

    by_reason = {s.reason: s for s in gallery.rejected}
    assert set(by_reason) == {"filter/static", "filter/aspect_ratio"}
    static = by_reason["filter/static"]
    assert static.rejected == 1 and static.note is None and static.thumbs[0].strip is not None
    assert static.thumbs[0].detail.startswith("motion.") and "filter.motion.min_motion" in static.thumbs[0].detail
    aspect = by_reason["filter/aspect_ratio"]
    assert aspect.thumbs[0].strip is None and "write.keep_clips: true" in aspect.note
    assert gallery.uncut == {"screen/low_resolution": 1, "split/too_short": 1}


def test_rejected_sample_is_the_lowest_keys_per_reason_and_bounded(tmp_path: Path) -> None:
    rejections = [{"source_id": f"{n:04x}", "key": f"{n:04x}_0000", "stage": "filter",
                   "reason": "static" if n % 2 else "text_area", "detail": f"clip {n}"} for n in range(40)]
    write_corpus(tmp_path, [], partitions=4, shard_samples=1, rejections=rejections)
    gallery = collect_gallery(tmp_path, per_reason=3)
    by_reason = {s.reason: s for s in gallery.rejected}
    assert by_reason["filter/static"].rejected == 20 and by_reason["filter/text_area"].rejected == 20
    assert [t.key for t in by_reason["filter/static"].thumbs] == ["0001_0000", "0003_0000", "0005_0000"]
    assert [t.key for t in by_reason["filter/text_area"].thumbs] == ["0000_0000", "0002_0000", "0004_0000"]
    assert gallery.kept == [] and gallery.uncut == {}
    assert [t.detail for t in by_reason["filter/static"].thumbs] == ["clip 1", "clip 3", "clip 5"]


def test_undecodable_clips_and_broken_shards_leave_a_note_not_a_failed_report(judged_corpus: Path,
                                                                                tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write_corpus(root, [Clip({"source_id": "aaaa", "key": "aaaa_0000"}, b"not an mp4"),
                        Clip({"source_id": "bbbb", "key": "bbbb_0000"}, b"nor this")], partitions=2, shard_samples=1)
    broken = sorted((root / "shards").iterdir())[-1]
    broken.write_bytes(b"\x00garbage" * 200)
    gallery = collect_gallery(root)
    assert len(gallery.kept) == 1 and gallery.kept[0].strip is None
    assert gallery.kept[0].note.startswith("no frame decoded")
    out = write_report(root, out=tmp_path / "report")
    assert "no frame decoded" in (out / REPORT_FILE).read_text()


def test_report_gallery_renders_in_headless_chromium(judged_corpus: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed: run `bash scripts/setup.sh` (it installs Debian's chromium)")
    out = write_report(judged_corpus, out=tmp_path / "report")
    page = (out / REPORT_FILE).read_text()
    assert "http://" not in page and "https://" not in page.split("<h2>Gallery</h2>")[1], "self-contained"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    dom = subprocess.run([*flags, "--dump-dom", (out / REPORT_FILE).local_path().as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    strips = re.findall(r'<img src="(data:image/jpeg;base64,[^"]+)" alt="([^"]+)" data-gallery="([^"]+)"', dom)
    assert sorted((key, group) for _, key, group in strips) == [
        ("aaaa_0000", "kept"), ("bbbb_0000", "kept"), ("cccc_0000", "filter/static")]
    for uri, _, _ in strips:
        assert _pixels(uri).std() > 30
    gallery = dom.split("<h2>Gallery</h2>")[1]
    assert "static 0.0" in gallery and "(threshold 0.002)" in gallery, "a kept clip's motion score and threshold"
    assert 'data-no-media="filter/aspect_ratio"' in gallery and "write.keep_clips: true" in gallery
    assert "screen/low_resolution: 1; split/too_short: 1" in gallery
