"""Faults of the machine are not verdicts on the data: a full disk fails the job, and the rerun loses nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from curation.config import load_config
from curation.errors import EnvironmentFault
from curation.ffmpeg import run
from curation.pipeline import run_curation
from shards.reader import read_index, read_manifest, read_rejections
from tests.media import one_shot_videos


def config(input_path: Path, output: Path):
    cfg = load_config(None, input=str(input_path), output=str(output))
    cfg.split.min_duration = 1.0
    cfg.caption.enabled = False
    cfg.filter.enabled = False
    return cfg


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 1 MiB (enlarged by the test); needs root and the right to mount, else the test skips."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_job_and_the_rerun_equals_an_uninterrupted_run(local_ray, small_disk: Path,
                                                                          tmp_path: Path):
    videos = tmp_path / "videos"
    one_shot_videos(videos, [f"v{i}" for i in range(6)])
    baseline = tmp_path / "baseline"
    run_curation(config(videos, baseline))

    # Room for about half of what the job writes (its clips, then the shard holding them): it fills mid-way.
    shard_bytes = sum(s["bytes"] for s in read_manifest(baseline)["shards"])
    subprocess.run(["mount", "-o", f"remount,size={max(64, shard_bytes // 2048)}k", str(small_disk)], check=True)
    corpus = small_disk / "corpus"
    with pytest.raises(RuntimeError, match="fault of the machine or the store, not of the data"):
        run_curation(config(videos, corpus))
    assert not (corpus / "manifest.json").exists()

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    run_curation(config(videos, corpus))
    assert read_index(corpus).sort_by("key").equals(read_index(baseline).sort_by("key"))
    assert [s["sha256"] for s in read_manifest(corpus)["shards"]] == \
        [s["sha256"] for s in read_manifest(baseline)["shards"]]
    assert read_rejections(corpus).num_rows == read_rejections(baseline).num_rows == 0


def test_ffmpeg_on_a_full_disk_is_a_fault_of_the_machine(small_disk: Path):
    (small_disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 8192))
    args = ["-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:duration=5",
            "-c:v", "libx264", "-preset", "ultrafast", str(small_disk / "out.mp4")]
    with pytest.raises(EnvironmentFault, match="No space left on device"):
        run(args, timeout_s=60)


def test_ffmpeg_that_runs_out_of_space_for_its_trailer_is_a_fault_even_though_it_exits_0(small_disk: Path,
                                                                                         tmp_path: Path):
    def encode(out: Path) -> list[str]:
        return ["-nostdin", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=192x108:duration=2.5",
                "-c:v", "libx264", "-preset", "veryfast", "-movflags", "+faststart", "-f", "mp4", str(out)]

    run(encode(tmp_path / "room.mp4"), timeout_s=60)
    size = (tmp_path / "room.mp4").stat().st_size
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    # Room for the frames but not for the index written last (the moov atom, moved to the front).
    (small_disk / "filler").write_bytes(b"\0" * (free - size + 8192))
    with pytest.raises(EnvironmentFault, match="No space left on device"):
        run(encode(small_disk / "out.mp4"), timeout_s=60)


def test_a_timed_out_tool_is_a_fault_of_the_machine():
    with pytest.raises(EnvironmentFault, match="timed out"):
        run(["-nostdin", "-f", "lavfi", "-i", "testsrc2", "-f", "null", "-"], timeout_s=0.5)
