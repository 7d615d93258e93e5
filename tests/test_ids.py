"""Source ids and clip keys are deterministic and can never smuggle a path into a file name."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest

from curation.ids import SOURCE_ID_LENGTH, clip_key, sanitise, source_id

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def test_source_id_is_16_hex_digits_of_the_sha256() -> None:
    url = "https://example.com/videos/clip.mp4"
    assert SOURCE_ID_LENGTH == 16
    assert source_id(url) == hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    assert HEX16.match(source_id(url))
    assert HEX16.match(source_id("/data/ünïcode file.mkv"))


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
    ],
)
def test_sanitise(name: str, expected: str) -> None:
    assert sanitise(name) == expected


@pytest.mark.parametrize("name", ["", ".", "..", "../", "///", "   ", "...", "-", "é"])
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
