"""Shared pytest fixtures."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http_server import VideoServer


# --- download: a real HTTP server and small videos for it to serve (tests/http_server.py) ---------


@pytest.fixture(scope="session")
def served_video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``clip.mp4``: 2 s of 320x180 test card, small enough to serve fast."""
    root = tmp_path_factory.mktemp("served")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-t", "2", "-pix_fmt", "yuv420p", str(root / "clip.mp4")],
        check=True,
    )
    return root


@pytest.fixture
def video_server(served_video_dir: Path) -> Iterator[VideoServer]:
    """A fresh VideoServer (fresh request counters) serving ``served_video_dir`` on 127.0.0.1."""
    with VideoServer(served_video_dir) as server:
        yield server
