"""The report's gallery: strips of real frames of kept clips (from the shards) and of rejected clips per reason
(from ``work/clips`` while their files exist, else from a local source's span), each with its scores, checked in
headless Chromium.

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

from curation.frames import sample_clip, sample_span
from curation.workarea import WorkArea
from jobs.cli import main as cli_main
from stats.gallery import FRAMES, WIDTH, collect_gallery
from stats.report import REPORT_FILE, write_report
from tests.layout_corpus import Clip, write_corpus
from tests.test_filters_record import filter_config, judge, make_clips


@pytest.fixture(scope="module")
def judged_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kept clips in shards (two copies of the moving clip under two sources). Rejected: the still (``filter/static``),
    its file left in ``work/clips`` as keep_clips leaves it; the 4:3 clip (``filter/aspect_ratio``), its file gone but
    its local source (the 4:3 file itself) still there; a clip of a web source (``filter/text_area``), no media left;
    a scene too short to cut (``split/too_short``) of a local source; one source rejected whole at the screen."""
    clips = make_clips(tmp_path_factory.mktemp("gallery-clips"))
    rows = judge(clips, filter_config())
    assert rows["still"]["reason"] == "static" and rows["four_three"]["reason"] == "aspect_ratio"
    assert rows["moving"].get("status") != "rejected"
    root = tmp_path_factory.mktemp("gallery") / "corpus"
    kept = [Clip({**rows["moving"], "source_id": sid, "key": f"{sid}_0000", "caption": f"a test pattern {sid}",
                  "clip_width": 1280, "clip_height": 720, "clip_fps": 25.0}, clips["moving"].read_bytes())
            for sid in ("aaaa", "bbbb")]
    rejected = [{**rows["still"], "source_id": "cccc", "key": "cccc_0000", "stage": "filter",
                 "source": "https://example.com/still.mp4"},
                {**rows["four_three"], "source_id": "dddd", "key": "dddd_0000", "stage": "filter",
                 "source": str(clips["four_three"]), "start_time": 0.5, "end_time": 2.0},
                {"source_id": "ffff", "key": "ffff_0000", "stage": "filter", "reason": "text_area", "detail": "text",
                 "source": "https://example.com/text.mp4", "start_time": 0.0, "end_time": 2.0}]
    whole = {"source_id": "eeee", "stage": "screen", "reason": "low_resolution", "detail": "720 > 480"}
    scene = {"source_id": "aaaa", "stage": "split", "reason": "too_short", "start_time": 0.5, "end_time": 1.5,
             "source": f"file://{clips['moving']}"}
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
    assert set(by_reason) == {"filter/static", "filter/aspect_ratio", "filter/text_area", "split/too_short"}
    static = by_reason["filter/static"]
    assert static.rejected == 1 and static.note is None and static.thumbs[0].origin == "clip file"
    assert _pixels(static.thumbs[0].strip).std() > 30
    assert static.thumbs[0].detail.startswith("motion.") and "filter.motion.min_motion" in static.thumbs[0].detail
    aspect = by_reason["filter/aspect_ratio"].thumbs[0]
    assert aspect.origin == "source 0.50-2.00 s", "the clip file is gone: the span of the local source"
    assert _pixels(aspect.strip).shape == (120, FRAMES * WIDTH + 2 * (FRAMES - 1), 3), "4:3 frames, 160 x 120"
    text = by_reason["filter/text_area"]
    assert text.thumbs[0].strip is None and "write.keep_clips: true" in text.note
    scene = by_reason["split/too_short"].thumbs[0]
    assert scene.key == "aaaa 0.50-1.50 s" and scene.origin == "source 0.50-1.50 s" and scene.strip
    assert gallery.whole == {"screen/low_resolution": 1}


def test_a_span_of_the_source_gives_the_frames_of_the_clip_cut_from_it(tmp_path: Path) -> None:
    """What the gallery shows for a clip whose file is gone: the same pictures, from one seek into the source."""
    source, clip = tmp_path / "source.mp4", tmp_path / "clip.mp4"
    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=s=320x180:r=25:d=8", *x264, "-g", "75", str(source)], check=True, timeout=120)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", "4", "-i", str(source), "-t", "2", *x264,
                    str(clip)], check=True, timeout=120)
    span = sample_span(str(source), 4.0, 6.0, 3, {"t": 160})["t"]
    cut = sample_clip(str(clip), 3, {"t": 160})["t"]
    assert span.times == pytest.approx([4 + t for t in cut.times], abs=0.021)
    for ours, theirs in zip(span.frames, cut.frames, strict=True):
        assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 2, "the same picture (two encodes apart)"
    assert np.abs(span.frames[0].astype(int) - span.frames[-1].astype(int)).mean() > 5


def test_rejected_sample_is_the_lowest_keys_per_reason_and_bounded(tmp_path: Path) -> None:
    rejections = [{"source_id": f"{n:04x}", "key": f"{n:04x}_0000", "stage": "filter",
                   "reason": "static" if n % 2 else "text_area", "detail": f"clip {n}"} for n in range(40)]
    write_corpus(tmp_path, [], partitions=4, shard_samples=1, rejections=rejections)
    gallery = collect_gallery(tmp_path, per_reason=3)
    by_reason = {s.reason: s for s in gallery.rejected}
    assert by_reason["filter/static"].rejected == 20 and by_reason["filter/text_area"].rejected == 20
    assert [t.key for t in by_reason["filter/static"].thumbs] == ["0001_0000", "0003_0000", "0005_0000"]
    assert [t.key for t in by_reason["filter/text_area"].thumbs] == ["0000_0000", "0002_0000", "0004_0000"]
    assert gallery.kept == [] and gallery.whole == {}
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


def test_no_gallery_leaves_it_out(judged_corpus: Path, tmp_path: Path) -> None:
    assert cli_main(["stats", str(judged_corpus), "--out", str(tmp_path / "plain"), "--no-gallery"]) == 0
    page = (tmp_path / "plain" / REPORT_FILE).read_text()
    assert "<h2>Funnel</h2>" in page and "<h2>Gallery</h2>" not in page and "image/jpeg" not in page
    assert cli_main(["stats", str(judged_corpus), "--out", str(tmp_path / "full")]) == 0
    assert (tmp_path / "full" / REPORT_FILE).read_text().count('data-gallery="kept"') == 2


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
        ("aaaa 0.50-1.50 s", "split/too_short"), ("aaaa_0000", "kept"), ("bbbb_0000", "kept"),
        ("cccc_0000", "filter/static"), ("dddd_0000", "filter/aspect_ratio")]
    for uri, _, _ in strips:
        assert _pixels(uri).std() > 30
    gallery = dom.split("<h2>Gallery</h2>")[1]
    assert re.search(r"static 0\.\d+ \(threshold 0\.002\)", gallery), "a kept clip's motion score and threshold"
    assert 'data-no-media="filter/text_area"' in gallery and "write.keep_clips: true" in gallery
    assert "frames from the source 0.50-2.00 s" in gallery and "frames from the clip file" in gallery
    assert "Sources rejected whole (no clip or scene to show): screen/low_resolution: 1." in gallery
