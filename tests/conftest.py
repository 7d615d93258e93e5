"""Shared pytest fixtures."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.local_cluster import LOOPBACK_ONLY_ENV, start_local_ray
from tests.http_server import VideoServer
from tests.s3_server import S3Server, s3_client_env

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


# --- Ray and shared material ------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_VIDEOS = REPO_ROOT.parent / "shared" / "testvideos"


# Ray reads this once, when first imported (after this conftest): every local Ray this test process starts
# (the fixture below, a module's own `ray.init(address="local")`) then keeps all its ports on 127.0.0.1.
os.environ.update(LOOPBACK_ONLY_ENV)


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One in-process local Ray (loopback only) for every test that runs the pipeline without a cluster of its own."""
    import ray

    start_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's own ffmpeg-made sample videos (demo.sample_videos), made once per session."""
    from demo.sample_videos import make_sample_videos

    root = tmp_path_factory.mktemp("samples")
    make_sample_videos(root)
    return root


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """``../shared/testvideos``: real videos with ground truth (``<file>.gt.json``); skip when absent."""
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"../shared/testvideos not found: expected the shared test videos at {SHARED_VIDEOS}")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def curated_corpus(local_ray, sample_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small corpus made by the real pipeline, for tests that read corpora (stats, ...).

    Its CSV manifest lists the sample videos (one of them twice), a truncated file and an audio-only
    file, so the corpus has clips, whole-source rejections of two stages and a duplicate listing.
    """
    import csv

    from curation.config import load_config
    from curation.pipeline import run_curation
    from tests import media

    root = tmp_path_factory.mktemp("curated")
    bad = [media.truncated(root), media.audio_only(root)]
    rows = [{"url": str(p), "license": "cc-by"} for p in sorted(sample_videos.glob("*.*"))]
    rows += [{"url": str(p), "license": "test"} for p in bad] + [dict(rows[0])]
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["url", "license"])
        writer.writeheader()
        writer.writerows(rows)
    cfg = load_config(None, input=str(manifest), output=str(root / "corpus"))
    cfg.split.min_duration = 1.0
    cfg.download.local_roots = [str(sample_videos), str(root)]  # the manifest lists videos of both folders
    cfg.caption.enabled = False  # no BLIP-2 weights in tests
    cfg.filter.enabled = False  # a corpus of every clip; tests/test_filters.py runs the filters
    run_curation(cfg)
    return {"root": root / "corpus", "rows": rows}


# --- object store: moto's S3 API on loopback (tests/s3_server.py) -----------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One ``moto_server`` for the session, with this process's environment pointing pyarrow at it.

    The AWS variables are set before anything builds an S3 client, and ``storage.location``'s
    cached client is dropped on both sides, so every ``s3://`` Location of a test goes to moto.
    Processes started after this fixture (a CLI, ``ray start``, ``ray.init``) inherit the variables;
    a Ray started *before* it does not: start that Ray after requesting this fixture, or hand
    ``s3_server.env()`` to it (``runtime_env={"env_vars": ...}`` or ``subprocess`` ``env=``).
    """
    with S3Server() as server, s3_client_env(server.env()):
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, uniquely named, empty bucket on ``s3_server``, as ``s3://<bucket>``."""
    return f"s3://{s3_server.create_bucket()}"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread: on a shared 2-core machine two threads spin-wait each other ~15x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
