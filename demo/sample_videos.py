"""Small, realistic HD test videos that the project renders itself with ffmpeg.

The demo and the tests need real video files with known structure (resolution, frame rate, audio, and
above all the times of hard cuts) without downloading anything, so they are synthesised from ffmpeg's
``lavfi`` sources. Every scene has continuous motion, so a scene detector sees ordinary frame-to-frame
change inside a scene and a large jump only at the cuts listed in :data:`SAMPLE_CUTS`; the content was
tuned until PySceneDetect's ``AdaptiveDetector`` and ``ContentDetector`` (default settings) both find
exactly those cuts and nothing else.

Rendering all of them takes a few seconds on two cores (``-preset ultrafast``) and is idempotent, so
callers can simply call :func:`make_sample_videos` whenever they need the files.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

#: Hard-cut times in seconds of each sample video; a scene detector should report exactly these.
SAMPLE_CUTS: dict[str, list[float]] = {
    "three_scenes.mp4": [3.0, 6.0],
    "long_scene.mp4": [],
    "with_audio.mkv": [],
}

_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def _three_scenes() -> list[str]:
    """1280x720 25 fps, 9 s: test card, Mandelbrot zoom, rotating gradient with a moving box.

    The three scenes differ in hue, saturation and layout, so both cuts (frames 75 and 150) are far
    above any detector threshold, while the motion inside each scene stays well below it.
    """
    return [
        "-f", "lavfi", "-i", "testsrc2=s=1280x720:r=25:d=3",
        "-f", "lavfi", "-i", "mandelbrot=s=1280x720:r=25",
        "-f", "lavfi",
        "-i", "gradients=s=1280x720:r=25:d=3:n=3:c0=0x1a3c8c:c1=0xf2a93b:c2=0x2bb673:speed=0.008:seed=7",
        "-f", "lavfi", "-i", "color=c=white:s=160x160:r=25:d=3",
        "-filter_complex",
        "[1]trim=duration=3,setpts=PTS-STARTPTS[zoom];"
        "[2][3]overlay=x='100+900*t/3':y='280+120*sin(2*PI*t/3)':shortest=1[box];"
        "[0][zoom][box]concat=n=3:v=1:a=0[v]",
        "-map", "[v]", *_X264, "-movflags", "+faststart",
    ]


def _long_scene() -> list[str]:
    """1280x720 25 fps, 24 s of one scene: a small test card drifting over a slowly turning gradient.

    Long enough that a 10 s maximum clip duration must split it into several chunks.
    """
    return [
        "-f", "lavfi",
        "-i", "gradients=s=1280x720:r=25:d=24:n=2:c0=0x3b1f5c:c1=0xd9d2c5:speed=0.004:seed=11",
        "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=24",
        "-filter_complex",
        "[0][1]overlay=x='480+400*sin(2*PI*t/12)':y='270+200*sin(2*PI*t/8)':shortest=1[v]",
        "-map", "[v]", *_X264, "-movflags", "+faststart",
    ]


def _with_audio() -> list[str]:
    """1920x1080 25 fps, 5 s of HD colour bars with a sliding box, plus a 440 Hz AAC track, in Matroska.

    Covers the full-HD, audio-carrying, non-mp4 case that downloads commonly are.
    """
    return [
        "-f", "lavfi", "-i", "smptehdbars=s=1920x1080:r=25:d=5",
        "-f", "lavfi", "-i", "color=c=0x202020:s=240x240:r=25:d=5",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=5",
        "-filter_complex", "[0][1]overlay=x='100+1400*t/5':y=420:shortest=1[v]",
        "-map", "[v]", "-map", "2:a", *_X264, "-c:a", "aac", "-b:a", "96k",
    ]


_RECIPES = {
    "three_scenes.mp4": _three_scenes,
    "long_scene.mp4": _long_scene,
    "with_audio.mkv": _with_audio,
}


def run_ffmpeg(args: list[str]) -> None:
    """Run ffmpeg quietly with ``args``; raise ``RuntimeError`` carrying its stderr if it fails.

    ``-nostdin`` keeps ffmpeg from reading the terminal (or pytest's stdin) while it runs.
    """
    command = ["ffmpeg", "-nostdin", "-y", "-hide_banner", "-loglevel", "error", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg exited with {result.returncode}: {result.stderr.strip()}")


def _render(path: Path, args: list[str]) -> None:
    """Render to a temporary name next to ``path`` and move it into place only once complete.

    A crash or a concurrent run can then never leave a half-written file under the final name.
    The temporary name keeps the extension, from which ffmpeg picks the container.
    """
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        run_ffmpeg([*args, str(partial)])
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def make_sample_videos(dest: Path) -> list[Path]:
    """Write the sample videos into ``dest`` (created if needed) and return their paths.

    Files that already exist with a non-zero size are kept, so repeated calls cost nothing.
    """
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, recipe in _RECIPES.items():
        path = dest / name
        if not (path.is_file() and path.stat().st_size > 0):
            _render(path, recipe())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """``python -m demo.sample_videos DEST``: render the samples and print one path per line."""
    parser = argparse.ArgumentParser(description="Render the sample videos into DEST.")
    parser.add_argument("dest", type=Path, help="directory to write the sample videos into")
    for path in make_sample_videos(parser.parse_args(argv).dest):
        print(path)


if __name__ == "__main__":
    main()
