"""Near-duplicate precision and recall on real footage, and the perceptual hash's cost per clip.

The evidence for ``filter.near_duplicates``' thresholds (README, "Near-duplicates"). Built at run time
with ffmpeg into a temporary directory, never stored: from each real video of ``../shared/testvideos``
(synthetic ones left out) and of the installed wheels, ``--segments`` scenes of ``--seconds`` each are
cut as the extract stage cuts a clip (x264 ``veryfast``, CRF 20). Each scene has copies: a re-encode at
CRF 35, a resize to half size, a 10 % crop, letterbox bars (padded to 4:3 or taller), pillarbox bars, and
the scene played 1.25x faster and 0.8x slower. A scene and its copies are one family: every pair inside
a family is a near-duplicate, every pair across families is not, and pairs of two scenes of the same
video (same camera, set and colours: clips that merely look alike) are counted on their own.

The clips are hashed as the filter does (``sample_clip`` with the filter's frames and small width, then
``phash_scores``). Two tables: the verification rule on every pair, for a grid of ``max_distance`` and
``min_matched``; and the whole grouping (LSH, verification, components) at the defaults, by copy kind.
The cost of hashing is a ratio against one ffmpeg one-thread decode of the same clip, in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402

from curation.config import FilterConfig, NearDuplicateConfig  # noqa: E402
from curation.filters.phash import near_duplicates, parse_hashes, phash_scores  # noqa: E402
from curation.frames import sample_clip  # noqa: E402
from curation.neardup import PHASHES_SCHEMA, group_in_driver, node_id  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_VIDEOS = ROOT.parent / "shared" / "testvideos"
EXTRACT = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]

#: Each copy of a scene: ffmpeg options applied to the scene as extracted (then encoded like a clip).
COPIES: dict[str, list[str]] = {
    "re-encode CRF 35": ["-crf", "35"],
    "half size": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2"],
    "crop 10 %": ["-vf", "crop=trunc(iw*0.9/2)*2:trunc(ih*0.9/2)*2"],
    "letterbox": ["-vf", "pad=iw:trunc(ih*1.35/2)*2:0:(oh-ih)/2:black"],
    "pillarbox": ["-vf", "pad=trunc(iw*1.3/2)*2:ih:(ow-iw)/2:0:black"],
    "1.25x faster": ["-vf", "setpts=PTS/1.25"],
    "0.8x slower": ["-vf", "setpts=PTS/0.8"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *args], check=True, timeout=600)


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return float(out.strip())


def real_videos() -> list[Path]:
    """The shared real videos (no synthetic ones) and the real videos shipped in installed wheels."""
    shared = sorted(p for p in SHARED_VIDEOS.rglob("*") if p.suffix in (".mp4", ".mkv") and "synthetic" not in p.parts)
    wheels = sorted((Path(sys.prefix) / "lib").glob("python3*/site-packages/tests/test.mp4"))
    return [p for p in shared + wheels if p.stat().st_size > 100_000]


def build(videos: list[Path], out: Path, segments: int, seconds: float) -> list[dict]:
    """Every scene as extracted and its copies: ``{"path", "family", "video", "kind"}``."""
    clips = []
    for v, video in enumerate(videos):
        total = duration(video)
        length = min(seconds, total / (segments + 1))
        for s in range(segments):
            start = total * (s + 0.5) / (segments + 0.5) - length / 2
            family = f"v{v}s{s}"
            scene = out / f"{family}.mp4"
            ffmpeg("-ss", f"{max(0.0, start):.3f}", "-i", str(video), "-t", f"{length:.3f}", *EXTRACT, str(scene))
            clips.append({"path": scene, "family": family, "video": v, "kind": "scene"})
            for k, (kind, options) in enumerate(COPIES.items()):
                copy = out / f"{family}-c{k}.mp4"
                ffmpeg("-i", str(scene), *EXTRACT, *options, str(copy))
                clips.append({"path": copy, "family": family, "video": v, "kind": kind})
    return clips


def decode_seconds(path: Path) -> float:
    """One ffmpeg one-thread decode of the whole clip (the baseline of the hash's cost)."""
    started = time.perf_counter()
    ffmpeg("-threads", "1", "-i", str(path), "-f", "null", "-")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=2, help="scenes cut from each video")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each scene")
    args = parser.parse_args(argv)
    filters, cfg = FilterConfig(), NearDuplicateConfig(enabled=True)
    videos = real_videos()
    with tempfile.TemporaryDirectory(prefix="eval_neardup-") as tmp:
        clips = build(videos, Path(tmp), args.segments, args.seconds)
        sample_s = hash_s = ffmpeg_s = 0.0
        for clip in clips:
            started = time.perf_counter()
            sample = sample_clip(str(clip["path"]), filters.frames, {"small": filters.motion.width})["small"]
            hashed = time.perf_counter()
            clip["hashes"] = parse_hashes(phash_scores(sample)["hashes"])
            done = time.perf_counter()
            sample_s, hash_s = sample_s + hashed - started, hash_s + done - hashed
            clip["size"] = sample.full_size
            clip["duration"] = duration(clip["path"])
            ffmpeg_s += decode_seconds(clip["path"])
    print(f"{len(videos)} real videos, {len(clips)} clips ({args.segments} scenes each x (1 + {len(COPIES)} copies), "
          f"{args.seconds:g} s), {sum(1 for c in clips if c['hashes'])} with frame hashes\n")

    pairs = list(itertools.combinations(range(len(clips)), 2))
    same = {p for p in pairs if clips[p[0]]["family"] == clips[p[1]]["family"]}
    lookalike = {p for p in pairs if p not in same and clips[p[0]]["video"] == clips[p[1]]["video"]}
    print(f"pairs: {len(same)} near-duplicate, {len(lookalike)} of two scenes of one video, "
          f"{len(pairs) - len(same) - len(lookalike)} of two videos\n")
    print("| max_distance | min_matched | precision | recall | false pairs: same video | other videos |")
    print("|---:|---:|---:|---:|---:|---:|")
    for distance, share in itertools.product((8, 10, 12, 14, 16), (0.4, 0.6, 0.8)):
        rule = NearDuplicateConfig(enabled=True, max_distance=distance, min_matched=share)
        found = {p for p in pairs if near_duplicates(clips[p[0]]["hashes"], clips[p[1]]["hashes"], rule)}
        marker = " (default)" if (distance, share) == (cfg.max_distance, cfg.min_matched) else ""
        print(f"| {distance}{marker} | {share:g} | {_ratio(len(found & same), len(found))} | "
              f"{_ratio(len(found & same), len(same))} | {len(found & lookalike)} | "
              f"{len(found - same - lookalike)} |")

    table = pa.table({"node": [node_id(f"{i:016x}_0000", 0, c["size"][0], c["size"][1], c["duration"])
                               for i, c in enumerate(clips)],
                      "hashes": [c["hashes"] for c in clips]}, schema=PHASHES_SCHEMA)
    decisions = group_in_driver(table, cfg)
    group = {i: i for i in range(len(clips))}
    for key, kept in zip(decisions["key"].to_pylist(), decisions["duplicate_of"].to_pylist(), strict=True):
        group[int(key[:16], 16)] = int(kept[:16], 16)
    grouped = {p for p in pairs if group[p[0]] == group[p[1]]}
    print(f"\nthe whole grouping (LSH: {cfg.tables} tables of {cfg.bits} bits; max_distance {cfg.max_distance}, "
          f"min_matched {cfg.min_matched}): precision {_ratio(len(grouped & same), len(grouped))}, recall "
          f"{_ratio(len(grouped & same), len(same))}, {len(grouped & lookalike)} false pairs of one video, "
          f"{len(grouped - same - lookalike)} of two\n")
    false_by_video: dict[str, int] = {}
    for i, _ in grouped & lookalike:
        name = videos[clips[i]["video"]].name
        false_by_video[name] = false_by_video.get(name, 0) + 1
    print("false pairs of two scenes of one video, by video: "
          + (", ".join(f"{n} {c}" for n, c in sorted(false_by_video.items())) or "none") + "\n")
    print("| copy | grouped with its scene |")
    print("|---|---:|")
    for kind in COPIES:
        members = [i for i, c in enumerate(clips) if c["kind"] == kind]
        scene = {c["family"]: i for i, c in enumerate(clips) if c["kind"] == "scene"}
        hits = sum(group[i] == group[scene[clips[i]["family"]]] for i in members)
        print(f"| {kind} | {hits} / {len(members)} |")
    print(f"\ncost per clip (mean of {len(clips)}): ffmpeg one-thread decode {1000 * ffmpeg_s / len(clips):.1f} ms "
          f"= 1.00; the filter's sample (decode + 160 px frames) {sample_s / ffmpeg_s:.3f}; hashing its frames "
          f"{hash_s / ffmpeg_s:.4f} ({1000 * hash_s / len(clips):.2f} ms)")
    return 0


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"


if __name__ == "__main__":
    sys.exit(main())
