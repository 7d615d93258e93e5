"""Source ids and clip keys are deterministic and can never smuggle a path into a file name."""

from __future__ import annotations

import re
import subprocess
import sys

import pyarrow as pa
import pytest

from curation.ids import SOURCE_ID_LENGTH, clip_key, sanitise, source_id
from curation.manifest import _source_rows, assign_ids


@pytest.mark.parametrize(("source", "expected"), [
    # computed once (sha256 of the UTF-8 bytes, first 16 hex digits) and frozen: a change re-keys every corpus
    ("https://example.com/videos/clip.mp4", "8283ee43812c3db2"),
    ("/data/ünïcode file.mkv", "3653569a4bd88a1c"),
    ("/data/vid\u00e9o.mp4", "7ea7f93df2ea0564"),  # é precomposed
    ("/data/vide\u0301o.mp4", "51d9b9963c2de986"),  # e + combining accent: other bytes, another source
    ("/data/x/a.mp4", "723186e46be5b847"),
])
def test_source_id_known_answers(source: str, expected: str) -> None:
    assert SOURCE_ID_LENGTH == 16
    assert source_id(source) == expected


def test_every_spelling_of_a_local_path_in_a_manifest_is_one_source() -> None:
    spellings = ["a.mp4", "./a.mp4", "sub/../a.mp4", "/data/x//a.mp4", "/data/x/a.mp4", "  a.mp4  "]
    table = _source_rows(pa.table({"url": spellings}), "url", "/data/x", False, roots=["/data/x"])
    rows = assign_ids(table, 8).to_pylist()
    assert {(r["source"], r["source_id"], r["partition"]) for r in rows} == {
        ("/data/x/a.mp4", "723186e46be5b847", rows[0]["partition"])}
    urls = ["https://e.com/a.mp4", "https://e.com/a.mp4?v=2", "HTTPS://E.COM/a.mp4"]
    rows = assign_ids(_source_rows(pa.table({"url": urls}), "url", "/data/x", False, roots=["/data/x"]), 8).to_pylist()
    assert [r["source"] for r in rows] == urls, "URLs are taken as written"
    assert len({r["source_id"] for r in rows}) == 3


def test_source_id_is_the_same_in_another_process() -> None:
    source = "/data/videos/a.mp4"
    other = subprocess.run(
        [sys.executable, "-c", f"from curation.ids import source_id; print(source_id({source!r}))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert other == source_id(source)  # no per-process hash seed or randomness


def test_different_sources_get_different_ids() -> None:
    sources = ["/a.mp4", "/a.mp4 ", "/A.mp4", "https://x/a.mp4", "https://x/a.mp4?v=2"]
    assert len({source_id(s) for s in sources}) == len(sources)


def test_clip_key_is_source_id_and_four_digit_index() -> None:
    sid = source_id("/data/a.mp4")
    assert clip_key(sid, 0) == f"{sid}_0000"
    assert clip_key(sid, 42) == f"{sid}_0042"
    assert clip_key(sid, 12345) == f"{sid}_12345"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("0123456789abcdef", "0123456789abcdef"),
        ("../../etc/passwd", "etc-passwd"),
        ("/absolute/path", "absolute-path"),
        ("a/b\\c", "a-b-c"),
        ("my holiday video.mp4", "my-holiday-video-mp4"),
        ("abc-dup3", "abc-dup3"),
        ("under_score", "under_score"),
        ("x;rm -rf ~", "x-rm--rf"),  # "-" itself is kept
        ("vidéo", "vid-o"),
        ("$(reboot)", "reboot"),
        ("`id`", "id"),
        ("a|b&c>d", "a-b-c-d"),
        ("x\x00y", "x-y"),
        ("a\u2215b", "a-b"),  # a division slash, not a "/": still not a separator left in
        ("..\\..\\windows", "windows"),
    ],
)
def test_sanitise(name: str, expected: str) -> None:
    assert sanitise(name) == expected


@pytest.mark.parametrize("name", ["", ".", "..", "../", "///", "   ", "...", "-", "é", "名前", "\x00"])
def test_sanitise_refuses_names_with_nothing_usable(name: str) -> None:
    with pytest.raises(ValueError, match="nothing usable"):
        sanitise(name)


def test_sanitised_names_are_one_safe_path_component() -> None:
    for name in ["../x", "a/../../b", ".hidden", "trailing.", " spaced out ", "tab\there", "new\nline", "a" * 500]:
        cleaned = sanitise(name)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cleaned), cleaned
        assert not cleaned.startswith("-") and not cleaned.endswith("-")
        assert len(cleaned) <= 120


def test_clip_key_sanitises_its_source_id() -> None:
    assert clip_key("../evil/id", 1) == "evil-id_0001"
    with pytest.raises(ValueError):
        clip_key("../", 0)
