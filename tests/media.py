"""Bad and awkward inputs for tests, each written into a given directory by one function.

Every function renders a small valid video with ffmpeg (or none at all) and, where the point is damage,
breaks it with plain byte operations, so the exact kind of breakage is known and reproducible. Each
docstring records what ffprobe 5.1 reports for the file, because that is what the probe stage sees.

``ALL_BAD`` maps a name to each input the pipeline must reject, or at least survive without crashing
(``truncated_faststart`` and ``corrupt_frames`` probe as healthy and fail only while decoding);
``rotated``, ``anamorphic`` and ``variable_frame_rate`` are valid videos whose geometry or timing the
pipeline has to handle correctly rather than reject.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

from demo.sample_videos import run_ffmpeg

_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def _encode(path: Path, source: str, *options: str) -> Path:
    """Encode the lavfi ``source`` with libx264 into ``path``, with extra output ``options``."""
    run_ffmpeg(["-f", "lavfi", "-i", source, *_X264, *options, str(path)])
    return path


def _cut(path: Path, fraction: float) -> Path:
    """Keep only the first ``fraction`` of the bytes of ``path``, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _top_level_box(data: bytes, kind: bytes) -> tuple[int, int]:
    """Return (payload start, payload end) of the first top-level ISO-BMFF box of type ``kind``."""
    offset = 0
    while offset + 8 <= len(data):
        size, box = struct.unpack(">I4s", data[offset : offset + 8])
        header = 8
        if size == 1:  # 64-bit "largesize" follows the type
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
            header = 16
        elif size == 0:  # box runs to the end of the file
            size = len(data) - offset
        if box == kind:
            return offset + header, offset + size
        offset += size
    raise ValueError(f"no top-level {kind!r} box")


def zero_length(d: Path) -> Path:
    """An empty ``.mp4``, as a failed download leaves behind.

    ffprobe: exit 1, ``moov atom not found`` then ``Invalid data found when processing input`` (the
    ``.mp4`` name makes it fall back to the mov demuxer).
    """
    path = d / "zero_length.mp4"
    path.write_bytes(b"")
    return path


def truncated(d: Path) -> Path:
    """The first 40 % of an mp4 whose ``moov`` index is at the end, so the index is missing entirely.

    ffprobe: exit 1, ``moov atom not found`` then ``Invalid data found when processing input``.
    """
    return _cut(_encode(d / "truncated.mp4", "testsrc2=s=320x240:r=25:d=2"), 0.4)


def truncated_faststart(d: Path) -> Path:
    """The first 60 % of a faststart mp4: the index is intact but the later frames are missing.

    ffprobe: exit 0 and reports the full stream (h264 320x240, duration 2.0 s, 50 frames) because it
    only reads the index; only decoding notices: ffmpeg logs ``partial file`` and ``Invalid NAL unit
    size``, and PyAV raises ``InvalidDataError`` after 29 frames.
    """
    path = _encode(d / "truncated_faststart.mp4", "testsrc2=s=320x240:r=25:d=2", "-movflags", "+faststart")
    return _cut(path, 0.6)


def not_a_video_image(d: Path) -> Path:
    """A PNG image renamed ``.mp4``.

    ffprobe: exit 0, format ``png_pipe`` with one ``png`` video stream 320x240 and no duration; a
    prober that only asks "is there a video stream?" would accept it.
    """
    png = d / "not_a_video_image.png"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=320x240", "-frames:v", "1", str(png)])
    return png.rename(d / "not_a_video_image.mp4")


def not_a_video_text(d: Path) -> Path:
    """A text file named ``.mp4``, as an error page saved under the video's name would be.

    ffprobe: exit 1, ``moov atom not found`` then ``Invalid data found when processing input``.
    """
    path = d / "not_a_video_text.mp4"
    path.write_text("<html><body>404 Not Found</body></html>\n", encoding="utf-8")
    return path


def audio_only(d: Path) -> Path:
    """An ``.mp4`` holding only a 2 s 440 Hz AAC track, as a mis-selected download format would be.

    ffprobe: exit 0, format mov/mp4, duration 2.0 s, one ``aac`` audio stream and no video stream.
    """
    path = d / "audio_only.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(path)])
    return path


def corrupt_frames(d: Path, seed: int = 1234) -> Path:
    """An mp4 whose middle fifth of ``mdat`` (the coded frames) is overwritten with random bytes.

    The header and index are intact, so it probes as a normal video; the damage surfaces only when
    decoding reaches the middle of the file.
    ffprobe: exit 0, h264 640x360 25 fps, duration 4.0 s, 100 frames, no complaints; decoding logs
    ``Error splitting the input into NAL units`` and ``Invalid NAL unit size``, and PyAV raises
    ``InvalidDataError`` after 42 frames.
    """
    path = _encode(d / "corrupt_frames.mp4", "testsrc2=s=640x360:r=25:d=4", "-g", "25")
    data = bytearray(path.read_bytes())
    start, end = _top_level_box(bytes(data), b"mdat")
    length = (end - start) // 5
    middle = (start + end) // 2 - length // 2
    data[middle : middle + length] = random.Random(seed).randbytes(length)
    path.write_bytes(bytes(data))
    return path


def absurd_dimensions(d: Path) -> Path:
    """A valid h264 mp4 of 16x16384 pixels (5 frames), far outside any sane video geometry.

    ffprobe: exit 0, h264 width 16 height 16384, display aspect ratio 1:1024, duration 0.2 s.
    """
    return _encode(d / "absurd_dimensions.mp4", "testsrc2=s=16x16384:r=25:d=0.2")


def tiny_dimensions(d: Path) -> Path:
    """A valid h264 mp4 of 8x8 pixels, 1 s.

    ffprobe: exit 0, h264 width 8 height 8, duration 1.0 s, 25 frames.
    """
    return _encode(d / "tiny_dimensions.mp4", "testsrc2=s=8x8:r=25:d=1")


def rotated(d: Path) -> Path:
    """A 1280x720 mp4 with a display matrix of -90 degrees, as portrait phone videos carry.

    ffmpeg 5.1 has no ``-display_rotation``, and ignores the ``rotate`` tag when re-encoding, so the
    tag is applied in a second, stream-copy pass; there ffmpeg 5.1 takes ``rotate=-90`` to mean a
    display matrix of -90 (``rotate=90`` would give +90).
    ffprobe: exit 0, h264 1280x720 (coded size), side data ``Display Matrix`` with ``rotation: -90``,
    so the picture is shown as 720x1280.
    """
    plain = _encode(d / "rotated_plain.mp4", "testsrc2=s=1280x720:r=25:d=1")
    path = d / "rotated.mp4"
    run_ffmpeg(["-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=-90", str(path)])
    plain.unlink()
    return path


def anamorphic(d: Path) -> Path:
    """A 720x576 (PAL) mp4 with sample aspect ratio 64:45, so it is displayed at 16:9 (1024x576).

    ffprobe: exit 0, h264 720x576, ``sample_aspect_ratio=64:45``, ``display_aspect_ratio=16:9``.
    """
    return _encode(d / "anamorphic.mp4", "testsrc2=s=720x576:r=25:d=1", "-vf", "setsar=64/45")


def variable_frame_rate(d: Path) -> Path:
    """An mp4 whose first 30 frames last 1/30 s each and whose next 30 last 1/10 s each.

    Frame timestamps are rewritten with ``setpts`` and kept as they are with ``-fps_mode vfr``, so
    the frame rate genuinely changes half-way rather than being merely declared variable.
    ffprobe: exit 0, h264 320x240, ``r_frame_rate=30/1`` but ``avg_frame_rate=900/59`` (about 15.3),
    duration about 3.93 s, 60 frames.
    """
    return _encode(
        d / "variable_frame_rate.mp4",
        "testsrc2=s=320x240:r=30:d=2",
        "-vf", "setpts='if(lt(N,30),N/30,1+(N-30)/10)/TB'",
        "-fps_mode", "vfr",
    )


#: The inputs that are broken or outside what the corpus accepts, by name, for parametrized tests.
ALL_BAD: dict[str, Callable[[Path], Path]] = {
    "zero_length": zero_length,
    "truncated": truncated,
    "truncated_faststart": truncated_faststart,
    "not_a_video_image": not_a_video_image,
    "not_a_video_text": not_a_video_text,
    "audio_only": audio_only,
    "corrupt_frames": corrupt_frames,
    "absurd_dimensions": absurd_dimensions,
    "tiny_dimensions": tiny_dimensions,
}


def one_shot_videos(folder: Path, names: list[str]) -> list[Path]:
    """Small one-shot videos, long enough for one clip each; made once.

    Each differs from the others of the call by its hue, and from any other name's video by its bytes
    (the name is in its metadata), so that no two are exact copies (``curation.copies``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        path = folder / f"{name}.mp4"
        if not path.exists():
            _encode(path, f"testsrc2=size=192x108:rate=24:duration=2.5,hue=h={37 * i}", "-frames:v", "60",
                    "-metadata", f"title={name}")
        out.append(path)
    return out
