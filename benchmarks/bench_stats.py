"""Time and peak memory of `videofactory stats` on a synthetic 10-million-clip corpus.

Builds, in a temporary directory, an ``index/`` dataset (one partition file per million rows) with the
real ``INDEX_SCHEMA`` and plausible values (1.1 million listed sources, 2-10 s clips at common
resolutions and frame rates, captions from a small vocabulary, filter scores as JSON), ``rejections/``
and a ``manifest.json``;
then runs, each in a fresh child process so that peak RSS (``ru_maxrss``) is its own:

* the baseline: ``pyarrow.parquet.read_table`` of exactly the index columns the statistics read;
* ``stats.compute.compute_stats`` (the numbers);
* ``stats.report.write_report`` (numbers, figures, JSON and HTML).

Usage (from the repository root): ``.venv/bin/python benchmarks/bench_stats.py [--rows 10000000]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shards.layout import (  # noqa: E402
    INDEX_DIR,
    MANIFEST_FILE,
    REJECTIONS_DIR,
    index_location,
    partition_name,
    shard_name,
)
from shards.reader import partition_files, read_index  # noqa: E402
from shards.schema import INDEX_SCHEMA, REJECTION_SCHEMA  # noqa: E402

#: Index columns the statistics read (the baseline reads exactly these).
STATS_COLUMNS = ["clip_duration", "clip_bytes", "clip_width", "clip_height", "display_aspect", "clip_fps",
                 "source_id", "shard", "scores", "caption"]
CHUNK_ROWS = 1_000_000
RESOLUTIONS = [(1280, 720, 0.45), (1920, 1080, 0.35), (3840, 2160, 0.05), (640, 360, 0.1), (1440, 1080, 0.05)]
FRAME_RATES = [(23.976, 0.2), (24.0, 0.1), (25.0, 0.25), (29.97, 0.3), (30.0, 0.1), (60.0, 0.05)]
ADJECTIVES = [f"adj{i}" for i in range(300)]
NOUNS = [f"noun{i}" for i in range(2000)]
VERBS = [f"verb{i}" for i in range(400)]
SHARD_BYTES = 1024**3


def _column(name: str, values: pa.Array | np.ndarray) -> pa.Array:
    """``values`` as an Arrow array of the index column's type."""
    return (values if isinstance(values, pa.Array) else pa.array(values)).cast(INDEX_SCHEMA.field(name).type)


def build_chunk(rng: np.random.Generator, first_source: int, sources: int, offset_bytes: int) -> pa.Table:
    """About ``sources * 9`` clips of ``sources`` consecutive synthetic sources, with every index column."""
    per_source = rng.poisson(8, sources) + 1
    rows = int(per_source.sum())
    source = np.repeat(np.arange(first_source, first_source + sources), per_source)
    clip_index = np.arange(rows) - np.repeat(np.cumsum(per_source) - per_source, per_source)
    names = [f"{(n * 2654435761 + 97) % (1 << 63):016x}" for n in range(first_source, first_source + sources)]
    ids = pa.array(names).take(pa.array(source - first_source))
    pick = rng.choice(len(RESOLUTIONS), rows, p=[r[2] for r in RESOLUTIONS])
    width = np.array([r[0] for r in RESOLUTIONS])[pick]
    height = np.array([r[1] for r in RESOLUTIONS])[pick]
    fps = np.array([f[0] for f in FRAME_RATES])[rng.choice(len(FRAME_RATES), rows, p=[f[1] for f in FRAME_RATES])]
    duration = np.clip(rng.lognormal(1.6, 0.4, rows), 2.0, 10.0)
    frames = np.round(duration * fps).astype(np.int64)
    duration = frames / fps
    clip_bytes = (duration * rng.lognormal(np.log(6e6), 0.5, rows) / 8).astype(np.int64)
    start = clip_index * 10.0
    shard = (offset_bytes + np.cumsum(clip_bytes)) // SHARD_BYTES
    caption = pc.binary_join_element_wise(
        "a", pa.array(ADJECTIVES).take(pa.array(rng.integers(0, len(ADJECTIVES), rows))),
        pa.array(NOUNS).take(pa.array(rng.zipf(1.3, rows) % len(NOUNS))),
        pa.array(VERBS).take(pa.array(rng.integers(0, len(VERBS), rows))), "in the",
        pa.array(NOUNS).take(pa.array(rng.integers(0, len(NOUNS), rows))), " ")
    motion = pc.round(pa.array(rng.gamma(2.0, 1.0, rows)), 4)
    text = pc.round(pa.array(rng.beta(1.0, 20.0, rows)), 4)
    # The filter's decision record (shards.scores.DecisionRecord) of clips that passed its checks
    scores = pc.binary_join_element_wise(
        '{"checks": {"static": {"score": ', pc.cast(motion, pa.string()), ', "threshold": 0.002, "passed": true}, '
        '"text_area": {"score": ', pc.cast(text, pa.string()), ', "threshold": 0.005, "passed": ',
        pc.if_else(pc.less_equal(text, 0.005), "true", "false"), '}}, "rejected_by": null, "score_only": true}', "")
    key = pc.binary_join_element_wise(ids, pc.utf8_lpad(pc.cast(pa.array(clip_index), pa.string()), 4, "0"), "_")
    columns = {
        "source_id": ids, "source": pc.binary_join_element_wise("https://example.org/videos/", ids, ".mp4", ""),
        "extra": pa.array(["{}"] * rows), "download_method": pa.array(["http"] * rows),
        "width": width, "height": height, "display_width": width, "display_height": height,
        "display_aspect": width / height, "fps": fps, "avg_fps": fps, "vfr": np.zeros(rows, bool),
        "key": key, "clip_index": clip_index, "start_time": start, "end_time": start + duration,
        "start_frame": np.round(start * fps).astype(np.int64), "detector": pa.array(["adaptive"] * rows),
        "clip_bytes": clip_bytes, "clip_width": width, "clip_height": height, "clip_fps": fps,
        "clip_frames": frames, "clip_duration": duration, "extract_mode": pa.array(["reencode"] * rows),
        "caption": caption, "scores": scores, "stage": pa.array(["write"] * rows),
        "shard": pa.array([shard_name("corpus", 0, n) for n in range(int(shard.max()) + 1)]).take(pa.array(shard)),
    }
    arrays = [_column(f.name, columns[f.name] if f.name in columns else pa.nulls(rows)) for f in INDEX_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=INDEX_SCHEMA)


def build_corpus(root: Path, rows: int, seed: int = 0) -> dict[str, int]:
    """Write the synthetic index, rejections and manifest under ``root``; return what was made."""
    rng = np.random.default_rng(seed)
    made = {"rows": 0, "sources": 0, "bytes": 0}
    (root / INDEX_DIR).mkdir()
    (root / REJECTIONS_DIR).mkdir()
    partition = 0
    while made["rows"] < rows:
        sources = max(1, min(CHUNK_ROWS, rows - made["rows"]) // 9)
        chunk = build_chunk(rng, made["sources"], sources, made["bytes"])
        chunk = chunk.slice(0, rows - made["rows"])
        pq.write_table(chunk, root / INDEX_DIR / f"{partition_name(partition)}.parquet", row_group_size=CHUNK_ROWS)
        partition += 1
        made["rows"] += chunk.num_rows
        made["sources"] += sources
        made["bytes"] += pc.sum(chunk["clip_bytes"]).as_py()
    rejected = made["sources"] // 10
    stages = rng.choice(["download", "probe", "split"], rejected, p=[0.5, 0.3, 0.2])
    reasons = {"download": "http_404", "probe": "unreadable", "split": "no_clips"}
    clip_rejections = made["rows"] // 20
    rejections = {
        "source_id": [f"rejected{i:08x}" for i in range(rejected)]
        + [f"filtered{i:08x}" for i in range(clip_rejections)],
        "key": [None] * rejected + [f"filtered{i:08x}_0000" for i in range(clip_rejections)],
        "stage": list(stages) + ["filter"] * clip_rejections,
        "reason": [reasons[s] for s in stages] + ["static"] * clip_rejections,
        "start_time": [None] * rejected + [0.0] * clip_rejections,
    }
    pq.write_table(pa.Table.from_pydict({n: rejections.get(n, [None] * (rejected + clip_rejections))
                                         for n in REJECTION_SCHEMA.names}, schema=REJECTION_SCHEMA),
                   root / REJECTIONS_DIR / f"{partition_name(0)}.parquet")
    shards = int(made["bytes"] // SHARD_BYTES) + 1
    manifest = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
                "config": {"stages": ["download", "probe", "split", "extract", "filter", "caption", "write"]},
                "counts": {"sources": made["sources"] + rejected + clip_rejections},
                "partitions": partition,
                "shards": [{"name": shard_name("corpus", 0, n), "bytes": SHARD_BYTES} for n in range(shards)]}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return made


def _measure(job: str, root: str, queue: multiprocessing.Queue) -> None:
    """Child process: run ``job`` once; report its wall time (imports excluded) and this process's peak RSS."""
    from stats.compute import compute_stats
    from stats.report import write_report

    started = time.perf_counter()
    if job == "baseline":
        table = read_index(root, columns=STATS_COLUMNS)
        detail = f"{table.num_rows:,} rows, {table.nbytes / 2**30:.2f} GiB in Arrow"
    elif job == "compute_stats":
        detail = f"{compute_stats(root)['totals']['clips']:,} clips"
    else:
        detail = f"{(write_report(root, out=Path(root) / 'stats') / 'report.html').size() / 1e3:.0f} kB html"
    seconds = time.perf_counter() - started
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, detail))


def run(job: str, root: Path) -> tuple[float, float, str]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(job, str(root), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="clips in the synthetic index")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        made = build_corpus(root, args.rows)
        built = time.perf_counter() - started
        size = sum(f.size() for f in partition_files(index_location(root)))
        load_before = os.getloadavg()
        results = {job: run(job, root) for job in ("baseline", "compute_stats", "write_report")}
        load_after = os.getloadavg()
    base_s, base_gib, _ = results["baseline"]
    print(f"- date: {datetime.now(UTC).isoformat(timespec='minutes')}")
    print(f"- machine: {_cpu_name()}, {os.cpu_count()} cores; "
          f"{platform.platform()}; Python {platform.python_version()}, pyarrow {pa.__version__}")
    print(f"- synthetic index: {made['rows']:,} clips of {made['sources']:,} sources, "
          f"{size / 2**30:.2f} GiB parquet (built in {built:.0f} s)")
    print(f"- load average (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {' '.join(f'{x:.2f}' for x in load_after)}")
    print()
    print("| what | wall s | x baseline | peak RSS GiB | x baseline | detail |")
    print("|---|---:|---:|---:|---:|---|")
    for job, (seconds, gib, detail) in results.items():
        print(f"| {job} | {seconds:.1f} | {seconds / base_s:.2f} | {gib:.2f} | {gib / base_gib:.2f} | {detail} |")


if __name__ == "__main__":
    main()
