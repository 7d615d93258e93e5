"""Costs of ``verify-sources`` and of the report's gallery, each against a baseline run in the same process.

verify-sources, against the loopback HTTP server (``tests/http_server.py``):

* sources checked per second with no rate limit, against a bare ``requests`` HEAD loop on as many threads
  (what the checker adds per source: reading the partitions, the private-network check, the row);
* the rate a run achieves under ``rate``, against ``rate`` (the bound must hold, and be reached).

Gallery, on a corpus of real 1080p x264 clips (ffmpeg ``testsrc2``; one clip per shard):

* the seconds ``collect_gallery`` takes per kept clip, against PyAV decoding the whole clip (one decode);
* the same for a rejected clip whose file is gone, drawn from a 1-4 s span of its local 5 s source (one seek);
* the report's size added per clip shown.

    nice -n 10 .venv/bin/python benchmarks/bench_verify_gallery.py [--sources 600] [--clips 6]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import av
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.verify import verify_config, verify_sources  # noqa: E402
from stats.gallery import collect_gallery  # noqa: E402
from tests.http_server import VideoServer  # noqa: E402
from tests.layout_corpus import Clip, write_corpus  # noqa: E402

LOOPBACK = ["download.allow_private_networks=true"]


def bench_verify(work: Path, sources: int, threads: int) -> list[tuple[str, str, str]]:
    files = work / "files"
    files.mkdir()
    (files / "v.mp4").write_bytes(b"v" * 4096)
    rows = []
    with VideoServer(files) as server:
        urls = [server.url(f"/videos/v.mp4?n={n}") for n in range(sources)]
        root = work / "corpus"
        write_corpus(root, [Clip({"source_id": f"{n:08x}", "key": f"{n:08x}_0000", "source": url}, b"x")
                            for n, url in enumerate(urls)], partitions=max(1, sources // 256), shard_samples=10**6)

        def head(url: str) -> int:
            with requests.Session() as session:
                return session.head(url, timeout=10).status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            assert set(pool.map(head, urls)) == {200}
        bare = sources / (time.perf_counter() - started)
        summary = verify_sources(root, verify_config(root, LOOPBACK, rate=1e9, burst=threads, concurrency=threads))
        assert summary["by_status"]["available"] == sources, summary
        checked = sources / summary["seconds"]
        rows.append((f"sources/s, no rate limit, {threads} threads", f"{checked:,.0f}",
                     f"{checked / bare:.2f}x a bare HEAD loop ({bare:,.0f}/s)"))
        rate = min(100.0, checked / 2)
        count = int(rate * 3)
        limited = work / "limited"
        write_corpus(limited, [Clip({"source_id": f"{n:08x}", "key": f"{n:08x}_0000", "source": urls[n]}, b"x")
                               for n in range(count)], partitions=2, shard_samples=10**6)
        summary = verify_sources(limited, verify_config(limited, LOOPBACK, rate=rate, burst=1, concurrency=threads))
        achieved = (summary["requests"] - 1) / summary["seconds"]
        rows.append((f"requests/s under rate {rate:g}", f"{achieved:,.1f}", f"{achieved / rate:.2f}x the rate"))
    return rows


def bench_gallery(work: Path, clips: int) -> list[tuple[str, str, str]]:
    made = []
    for n in range(clips):
        path = work / f"clip{n}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=s=1920x1080:r=25:d=5,hue=h={n * 40}", "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", str(path)], check=True, timeout=300)
        made.append(path)
    root = work / "gallery"
    rejected = [{"source_id": f"r{n:03x}", "key": f"r{n:03x}_0000", "source": str(p), "stage": "filter",
                 "reason": "static", "start_time": 1.0, "end_time": 4.0} for n, p in enumerate(made)]
    write_corpus(root, [Clip({"source_id": f"{n:04x}", "key": f"{n:04x}_0000", "caption": "c"}, p.read_bytes())
                        for n, p in enumerate(made)], partitions=clips, shard_samples=1, rejections=rejected)
    started = time.perf_counter()
    for path in made:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                pass
    decode = (time.perf_counter() - started) / clips
    started = time.perf_counter()
    gallery = collect_gallery(root, kept=clips, per_reason=0)
    per_clip = (time.perf_counter() - started) / clips
    assert len(gallery.kept) == clips and all(t.strip for t in gallery.kept)
    started = time.perf_counter()
    spans = collect_gallery(root, kept=0, per_reason=clips)
    per_span = (time.perf_counter() - started) / clips
    assert [len(s.thumbs) for s in spans.rejected] == [clips] and all(t.origin for t in spans.rejected[0].thumbs)
    size = sum(len(t.strip) for t in gallery.kept) / clips
    return [(f"gallery s per kept clip (1080p, 5 s, {clips} clips)", f"{per_clip:.3f}",
             f"{per_clip / decode:.2f}x one PyAV decode ({decode:.3f} s)"),
            ("gallery s per rejected clip from its source (1-4 s of 5 s)", f"{per_span:.3f}",
             f"{per_span / decode:.2f}x one PyAV decode"),
            ("report bytes per clip shown (base64 JPEG strip)", f"{size:,.0f}", "-")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=600)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--clips", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "verify").mkdir()
        rows = bench_verify(Path(tmp) / "verify", args.sources, args.threads)
        rows += bench_gallery(Path(tmp), args.clips)
    print(f"{platform.node()}, {platform.processor() or platform.machine()}, "
          f"{datetime.now(UTC).isoformat(timespec='minutes')}")
    print("| measure | value | against the baseline |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
