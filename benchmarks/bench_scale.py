"""What the curation job's bookkeeping costs per source as the corpus grows: driver, frontier, writer, manifest.

The stages' own work (decoding, encoding, captioning) is priced by ``bench_curation.py`` and
``bench_caption.py``. This script prices everything else, the machinery a 130M-clip corpus runs
through whatever its videos hold: ingest, the frontier that rebuilds each partition's rows from
its state objects, Ray Data carrying the rows to the driver, the driver sorting them by partition,
the partition-writing tasks (shards, index, rejections, records, deleting the work-area clips) and
the manifest.

**The sources are synthetic stage results**, not videos: for each size the work area is built as a
job that ran every stage up to captioning would have left it. The input manifest is a parquet of
fake URLs, put through the real ``curation.ingest.ingest``; then each source gets ``--clips`` clip
rows (status ok, stage ``caption``) persisted as one state object
``work/state/caption/pNNNNN/<source_id>.parquet`` (the object ``OperatorWorker._persist`` writes)
and each clip a tiny file (``--clip-bytes``, same bytes for all) under
``work/clips/<sid>/<key>.mp4`` whose sha256 the rows carry. The rows say each clip is
``--nominal-clip-mb`` MB, so shards are planned as for real clips of that size (1 GiB shards hold
about 512 clips of 2 MB) while the bytes moved stay tiny. The real job then runs with
``stages = ["write"]`` (``run_curation``), so the driver, the frontier, the partition writer and
the manifest are the production code.

Each size runs in fresh subprocesses (one prepares the work area, one runs the job), so the driver's
peak RSS (``ru_maxrss`` of the job's process) is that size's alone. CPU is that of the job's whole
process tree (driver, Ray's head processes, its workers), sampled from ``/proc`` every 0.2 s from
after ``ray.init`` to the end of ``run_curation``; a worker that exits between two samples loses at
most 0.2 s. The object store (moto) runs outside that tree; its CPU is shown apart. Other processes
on the machine are left out of the tree's CPU but still slow it through contention.

The per-source cost of one state object is measured on its own ("state write per source"): the
``to_table(rows)`` + ``Location.write_table`` that ``OperatorWorker._persist`` does, timed on the
first ``--state-sample`` sources sequentially (the rest are written in parallel and not timed).

Where the time goes is measured from the outside: the benchmark wraps the driver's
``_PartitionWriter.add`` and ``write_manifest`` and times ``_consume`` (main-thread CPU and wall),
the write tasks report their own seconds (``stage_times.write.seconds`` of the manifest), and the
frontier (``runner.frontier``) is timed directly on a sample of partitions
after the run.

Run from the repository root: ``.venv/bin/python benchmarks/bench_scale.py > report.md`` (about
12 minutes on 2 cores at the default sizes). Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jobs.local_cluster import LOOPBACK_ONLY_ENV, start_local_ray  # noqa: E402

os.environ.update(LOOPBACK_ONLY_ENV)  # before anything imports ray: every Ray this benchmark starts is loopback-only

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The aims of the scale design.
AIM_RSS_GROWTH = 1.5  # driver peak RSS, largest size against 10^4
AIM_STATE_PER_SOURCE = 1.0  # state objects per source per job
AIM_MACHINERY_CPU_MS = 20.0  # per source
AIM_WRITE_MS_PER_CLIP = 2.0

log = logging.getLogger("bench_scale")


# --- measuring the process tree --------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, own CPU s) of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _label(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "other"
    text = " ".join(argv)
    if argv[0].startswith("ray::") or "default_worker.py" in text:
        return "workers"
    return "ray system"  # gcs_server, raylet, log monitor, agents


class TreeMeter:
    """CPU seconds of this process and its descendants over a ``with`` block, by label (see the module doc)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s, self.root = interval_s, os.getpid()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.labels: dict[int, str] = {}
        self._stop = threading.Event()
        self._sampler_s = 0.0
        self._started = False
        self.by_label: dict[str, float] = {}

    def _scan(self) -> None:
        stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p)))}
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _) in stats.items():
            children[ppid].append(pid)
        todo = [self.root]
        while todo:
            pid = todo.pop()
            if pid not in stats:
                continue
            if pid not in self.labels:
                self.labels[pid] = _label(pid, self.root)
                self.first[pid] = 0.0 if self._started else stats[pid][1]  # new in the window: all of it
            self.last[pid] = stats[pid][1]
            todo.extend(children[pid])

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.thread_time()
            self._scan()
            self._sampler_s += time.thread_time() - started

    def __enter__(self) -> TreeMeter:
        self._scan()
        self._started = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()
        out: dict[str, float] = defaultdict(float)
        for pid, cpu in self.last.items():
            out[self.labels[pid]] += cpu - self.first[pid]
        out["driver"] -= self._sampler_s
        self.by_label = dict(out)


def _proc_cpu(pid: int | None) -> float:
    found = _stat(pid) if pid else None
    return found[1] if found else 0.0


# --- the child processes ---------------------------------------------------------------------------


def _config(spec: dict[str, Any]):
    from curation.config import load_config

    cfg = load_config(None, input=spec["input"], output=spec["root"])
    cfg.caption.enabled = False
    cfg.filter.enabled = False
    return cfg


def _ray_init(cpus: int) -> None:
    start_local_ray(num_cpus=cpus, include_dashboard=False, log_to_driver=False)


def _clip_payload(n: int) -> bytes:
    return bytes((i * 131 + 7) % 251 for i in range(n))


def _state_rows(sources: list[dict[str, Any]], clips: int, sha: str, nominal_bytes: int, work) -> dict[str, list]:
    """source_id -> its K synthetic clip rows, as the caption stage would have left them."""
    from curation.ids import clip_key

    out = {}
    for src in sources:
        sid = src["source_id"]
        source_sha = hashlib.sha256(sid.encode()).hexdigest()  # distinct sources: none is an exact copy of another
        rows = []
        for i in range(clips):
            key = clip_key(sid, i)
            rows.append({
                **{k: src[k] for k in ("source_id", "source", "extra", "partition")},
                "download_method": "synthetic", "source_sha256": source_sha, "source_bytes": 50_000_000,
                "container": "mp4", "video_codec": "h264", "pix_fmt": "yuv420p", "width": 1280, "height": 720,
                "fps": 30.0, "avg_fps": 30.0, "vfr": False, "duration": 2.0 * clips, "has_audio": False,
                "key": key, "clip_index": i, "scene_index": i, "start_time": 2.0 * i, "end_time": 2.0 * i + 2.0,
                "start_frame": 60 * i, "end_frame": 60 * i + 60, "detector": "adaptive", "source_rows": clips,
                "clip_path": work.clip_location(sid, key).uri, "clip_sha256": sha, "clip_bytes": nominal_bytes,
                "clip_width": 1280, "clip_height": 720, "clip_fps": 30.0, "clip_frames": 60, "clip_duration": 2.0,
                "extract_mode": "reencode", "keyframe_snapped": False,
                "caption": f"synthetic caption {i}", "captions": "[]", "caption_model": "synthetic",
                "caption_revision": "synthetic", "scores": "{}",
                "status": "ok", "stage": "caption", "worker": "synthetic",
            })
        out[sid] = rows
    return out


def child_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the work area as a job that ran every stage up to captioning would have left it."""
    import pyarrow as pa
    import ray

    from curation.ingest import ingest
    from curation.workarea import WorkArea
    from shards.schema import to_table
    from storage import Location

    n, clips = spec["size"], spec["clips"]
    payload = _clip_payload(spec["clip_bytes"])
    sha = hashlib.sha256(payload).hexdigest()
    nominal = int(spec["nominal_clip_mb"] * 1_000_000) or len(payload)
    Location(spec["input"]).write_table(pa.table({"url": [f"https://videos.invalid/v/{i:09d}.mp4" for i in range(n)]}))
    cfg = _config(spec)
    work = WorkArea(Location(cfg.output))
    _ray_init(spec["cpus"])
    time.sleep(2)
    cpu, wall = time.process_time(), time.perf_counter()
    with TreeMeter() as meter:
        table, count = ingest(cfg, work)
    ingest_wall = time.perf_counter() - wall
    ray.shutdown()
    # the stage results: one state object per source, tiny clip files
    partitions = table["partition"].to_pylist()
    sample = spec["state_sample"]
    timed = {"n": 0, "cpu": 0.0, "wall": 0.0}
    setup_started = time.perf_counter()

    def clip_writes(rows_by_source: dict[str, list]) -> None:
        if work.output.is_local:
            for sid, rows in rows_by_source.items():
                folder = Path(work.clips.path) / sid
                folder.mkdir(parents=True, exist_ok=True)
                for row in rows:
                    (folder / f"{row['key']}.mp4").write_bytes(payload)
        else:
            fs = work.output.fs
            for rows in rows_by_source.values():
                for row in rows:
                    with fs.open_output_stream(Location(row["clip_path"]).path) as out:
                        out.write(payload)

    def state_write(partition: int, sid: str, rows: list) -> None:
        (work.state_dir("caption", partition) / f"{sid}.parquet").write_table(to_table(rows))

    def state_write_slice(partition: int, sid: str, table: pa.Table) -> None:
        # the same object as state_write's (one table built per partition, then sliced): only the
        # preparation of 10^5 sources is faster; the per-source path is what the timed sample measures
        (work.state_dir("caption", partition) / f"{sid}.parquet").write_table(table)

    pool = ThreadPoolExecutor(16 if not work.output.is_local else 4)
    pending = []
    for partition in partitions:
        sources = work.read_sources(partition).to_pylist()
        rows_by_source = _state_rows(sources, clips, sha, nominal, work)
        pending.append(pool.submit(clip_writes, rows_by_source))
        sids = list(rows_by_source)
        k = max(0, min(len(sids), sample - timed["n"]))
        for sid in sids[:k]:  # the measured part: sequential, in this thread
            c, w = time.thread_time(), time.perf_counter()
            state_write(partition, sid, rows_by_source[sid])
            timed["cpu"] += time.thread_time() - c
            timed["wall"] += time.perf_counter() - w
            timed["n"] += 1
        if sids[k:]:
            whole = to_table(r for sid in sids[k:] for r in rows_by_source[sid])
            for i, sid in enumerate(sids[k:]):
                pending.append(pool.submit(state_write_slice, partition, sid, whole.slice(i * clips, clips)))
        if len(pending) > 20_000:
            for f in pending:
                f.result()
            pending = []
    for f in pending:
        f.result()
    pool.shutdown()
    return {
        "partitions": count, "partitions_nonempty": len(partitions),
        "ingest_wall_s": ingest_wall, "ingest_cpu_s": sum(meter.by_label.values()),
        "ingest_driver_cpu_s": time.process_time() - cpu,
        "state_sample": timed["n"], "state_write_cpu_ms": 1000 * timed["cpu"] / max(1, timed["n"]),
        "state_write_wall_ms": 1000 * timed["wall"] / max(1, timed["n"]),
        "setup_s": time.perf_counter() - setup_started,
    }


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """``run_curation`` with ``stages = ["write"]`` under a TreeMeter, its phases timed from outside."""
    import psutil
    import ray

    import curation.pipeline as pipeline
    from curation.runner import frontier
    from curation.workarea import WorkArea
    from storage import Location

    phases: dict[str, float] = defaultdict(float)
    marks: dict[str, float] = {}
    original_add, original_manifest, original_consume = (pipeline._PartitionWriter.add, pipeline.write_manifest,
                                                         pipeline._consume)
    original_submit = pipeline._PartitionWriter._submit

    def add(self, batch):
        c, w = time.thread_time(), time.perf_counter()
        try:
            return original_add(self, batch)
        finally:
            phases["add_cpu"] += time.thread_time() - c
            phases["add_wall"] += time.perf_counter() - w
            phases["batches"] += 1
            phases["rows"] += batch.num_rows

    def submit(self, partition):
        marks.setdefault("first_submit", time.perf_counter())
        c = time.thread_time()
        try:
            return original_submit(self, partition)
        finally:
            phases["submit_cpu"] += time.thread_time() - c

    def manifest(*args, **kwargs):
        c, w = time.thread_time(), time.perf_counter()
        marks["manifest_start"] = w
        try:
            return original_manifest(*args, **kwargs)
        finally:
            phases["manifest_cpu"] += time.thread_time() - c
            phases["manifest_wall"] += time.perf_counter() - w

    def consume(*args, **kwargs):
        c, w = time.thread_time(), time.perf_counter()
        marks["consume_start"] = w
        try:
            return original_consume(*args, **kwargs)
        finally:
            phases["consume_cpu"] += time.thread_time() - c
            phases["consume_wall"] += time.perf_counter() - w  # includes writer.finish? no: finish is after

    pipeline._PartitionWriter.add = add
    pipeline._PartitionWriter._submit = submit
    pipeline.write_manifest = manifest
    pipeline._consume = consume

    cfg = _config(spec)
    cfg.stages = ["write"]
    _ray_init(spec["cpus"])
    time.sleep(3)  # Ray keeps starting processes after init returns
    rss_after_init = psutil.Process().memory_info().rss
    store_cpu = _proc_cpu(spec.get("store_pid"))
    started = time.perf_counter()
    with TreeMeter() as meter:
        summary = pipeline.run_curation(cfg)
    wall = time.perf_counter() - started
    store_cpu = _proc_cpu(spec.get("store_pid")) - store_cpu
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ray.shutdown()

    work = WorkArea(Location(cfg.output))
    manifest_doc = json.loads((work.output / "manifest.json").read_text())
    # the frontier, timed directly on a few partitions (after the run: state is still there)
    table = work.read_partition_table()
    some = table["partition"].to_pylist()[: spec["frontier_sample"]]
    c, w, sources = time.process_time(), time.perf_counter(), 0
    for p in some:
        sources += len({row["source_id"] for row in frontier(work, p, [], "write")})
    frontier_cpu, frontier_wall = time.process_time() - c, time.perf_counter() - w
    # objects under the output
    counts: dict[str, int] = defaultdict(int)
    for f in work.output.files(recursive=True):
        rel = f.uri[len(work.output.uri) + 1:]
        if rel.startswith("work/state/"):
            counts["state" if rel.endswith(".parquet") else "other"] += 1
        elif rel.startswith("work/sources/"):
            counts["sources"] += 1
        elif rel.startswith("work/clips/"):
            counts["clips left"] += 1
        elif rel.startswith("work/written/"):
            counts["records"] += 1
        elif rel.startswith("shards/"):
            counts["shards"] += 1
        elif rel.startswith(("index/", "rejections/")):
            counts["index+rejections"] += 1
        else:
            counts["other"] += 1
    write_times = manifest_doc["stage_times"].get("write", {})
    return {
        "wall_s": wall, "cpu": meter.by_label, "store_cpu_s": store_cpu,
        "peak_rss": peak_rss, "rss_after_init": rss_after_init,
        "clips": manifest_doc["counts"]["clips"], "sources": summary.sources,
        "write_task_s": write_times.get("seconds", 0.0),
        "phases": dict(phases),
        "setup_wall_s": marks.get("consume_start", started) - started,
        "first_submit_s": marks.get("first_submit", started) - started,
        "finish_wall_s": marks.get("manifest_start", started + wall) - (marks.get("consume_start", started)
                                                                        + phases["consume_wall"]),
        "frontier_cpu_ms_per_source": 1000 * frontier_cpu / max(1, sources),
        "frontier_wall_ms_per_source": 1000 * frontier_wall / max(1, sources),
        "counts": dict(counts),
    }


def child_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(args.child_spec)
    result = child_prepare(spec) if args.child == "prepare" else child_run(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# --- the parent ------------------------------------------------------------------------------------


def _spawn(kind: str, spec: dict[str, Any], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--child-spec", json.dumps(spec)],
                          env=env, cwd=REPO, timeout=timeout_s, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} of {spec['store']} {spec['size']} failed with {proc.returncode}")
    return json.loads(Path(spec["result"]).read_text())


def measure(store: str, size: int, args: argparse.Namespace, tmp: Path, server: Any) -> dict[str, Any]:
    env = dict(os.environ)
    if store == "s3":
        bucket = f"bench-scale-{size}-{int(time.time())}"
        server.create_bucket(bucket)
        root, input_uri = f"s3://{bucket}/corpus", f"s3://{bucket}/input/sources.parquet"
        env.update(server.env())
    else:
        root, input_uri = str(tmp / f"local-{size}" / "corpus"), str(tmp / f"local-{size}" / "sources.parquet")
    clips = args.s3_clips if store == "s3" else args.clips
    spec = {"store": store, "size": size, "root": root, "input": input_uri, "clips": clips, "cpus": args.cpus,
            "clip_bytes": args.clip_bytes, "nominal_clip_mb": args.nominal_clip_mb,
            "state_sample": args.state_sample,
            "frontier_sample": args.frontier_sample,
            "store_pid": server.pid if store == "s3" else None}
    t0 = time.perf_counter()
    log.info("%s %d: preparing the work area (%d clips per source)", store, size, clips)
    prep = _spawn("prepare", {**spec, "result": str(tmp / "prep.json")}, env, args.timeout_s)
    log.info("%s %d: prepared in %.0f s (ingest %.1f s); running the write job", store, size,
             time.perf_counter() - t0, prep["ingest_wall_s"])
    run = _spawn("run", {**spec, "result": str(tmp / "run.json")}, env, args.timeout_s)
    log.info("%s %d: job %.1f s wall, %.1f CPU s", store, size, run["wall_s"], sum(run["cpu"].values()))
    if store == "local" and not args.keep:
        shutil.rmtree(tmp / f"local-{size}", ignore_errors=True)
    return {"store": store, "size": size, "clips_per_source": clips, "prep": prep, "run": run}


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def report(results: list[dict[str, Any]], args: argparse.Namespace, started: datetime) -> str:
    lines = [f"## Scale (bookkeeping): run of {started:%Y-%m-%d %H:%M} UTC", ""]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    cpu_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor())
    import pyarrow
    import ray
    lines += [f"Machine: {cpu_name}, {os.cpu_count()} cores, {mem:.1f} GiB RAM; Python {platform.python_version()}, "
              f"ray {ray.__version__}, pyarrow {pyarrow.__version__}; Ray with {args.cpus} CPUs per job. "
              f"`{' '.join(['benchmarks/bench_scale.py', *sys.argv[1:]])}`", "",
              f"**Synthetic stage results** (no video was decoded): per source {args.clips} clip rows "
              f"({args.s3_clips} on S3) at stage `caption`, one state object, one {args.clip_bytes}-byte clip file "
              f"per clip; rows say {args.nominal_clip_mb} MB per clip so shards are planned as for real clips. "
              "The job is the real `run_curation` with `stages: [write]`; partitions by the auto rule "
              "(sources / 256, up to a power of two).", ""]
    lines += ["| store | sources | clips | partitions | job wall s | CPU ms / source | driver | workers | ray system "
              "| store CPU s | driver peak RSS MiB (after `ray.init`) | write task ms / clip | write wall ms / clip "
              "| state write / source (CPU ms, wall ms) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        run, prep = r["run"], r["prep"]
        n, clips = r["size"], run["clips"]
        cpu = run["cpu"]
        total = sum(cpu.values())
        write_wall = run["wall_s"] - run["first_submit_s"] - run["phases"].get("manifest_wall", 0.0)
        lines.append(
            f"| {r['store']} | {n:,} | {clips:,} | {prep['partitions']} | {_fmt(run['wall_s'], 1)} "
            f"| {_fmt(1000 * total / n)} | {_fmt(1000 * cpu.get('driver', 0) / n)} "
            f"| {_fmt(1000 * cpu.get('workers', 0) / n)} | {_fmt(1000 * cpu.get('ray system', 0) / n)} "
            f"| {_fmt(run['store_cpu_s'], 1) if r['store'].startswith('s3') else '-'} "
            f"| {run['peak_rss'] / 2**20:.0f} ({run['rss_after_init'] / 2**20:.0f}) "
            f"| {_fmt(1000 * run['write_task_s'] / max(1, clips), 3)} | {_fmt(1000 * write_wall / max(1, clips), 3)} "
            f"| {_fmt(prep['state_write_cpu_ms'])}, {_fmt(prep['state_write_wall_ms'])} |")
    lines += ["", "CPU ms / source: the job's process tree (driver + Ray workers + Ray's own processes) from the start "
              "to the end of `run_curation`, over sources; the three columns after it split it. Write task ms / clip: "
              "the partition tasks' own seconds summed (`stage_times.write.seconds`); write wall: from the first "
              "partition submitted to the manifest's start. State write: `to_table` + `write_table` of one "
              f"source's state object, first {args.state_sample} sources in sequence.", ""]
    lines += ["Objects under the output after the job, per 1,000 clips (clips: written by the stages, then deleted by "
              "the writer; left: still there).", "",
              "| store | sources | state | sources objects | clips written | clips left | shards | index+rejections "
              "| records | other |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        c, k = r["run"]["counts"], r["run"]["clips"] / 1000
        lines.append(f"| {r['store']} | {r['size']:,} | " + " | ".join(
            _fmt(v / k, 2) for v in (c.get("state", 0), c.get("sources", 0), r["run"]["clips"],
                                     c.get("clips left", 0), c.get("shards", 0), c.get("index+rejections", 0),
                                     c.get("records", 0), c.get("other", 0))) + " |")
    lines += ["", "Where the time goes (ms per source; driver figures are the driver's main-thread CPU):", "",
              "| store | sources | ingest wall | ingest CPU | job set-up wall | Ray Data → driver wall | of it: "
              "driver row handling CPU | of it: partition submit CPU | waiting for last writes wall | manifest wall "
              "| frontier CPU (direct) | write tasks |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        run, prep, n = r["run"], r["prep"], r["size"]
        p = run["phases"]
        lines.append(
            f"| {r['store']} | {n:,} | {_fmt(1000 * prep['ingest_wall_s'] / n, 3)} "
            f"| {_fmt(1000 * prep['ingest_cpu_s'] / n, 3)} | {_fmt(1000 * run['setup_wall_s'] / n, 3)} "
            f"| {_fmt(1000 * p.get('consume_wall', 0) / n, 3)} | {_fmt(1000 * p.get('add_cpu', 0) / n, 3)} "
            f"| {_fmt(1000 * p.get('submit_cpu', 0) / n, 3)} | {_fmt(1000 * run['finish_wall_s'] / n, 3)} "
            f"| {_fmt(1000 * p.get('manifest_wall', 0) / n, 3)} | {_fmt(run['frontier_cpu_ms_per_source'], 3)} "
            f"| {_fmt(1000 * run['write_task_s'] / n, 3)} |")
    lines += ["", "### Aims", ""]
    lines += _aims(results)
    return "\n".join(lines) + "\n"


def _aims(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for store in sorted({r["store"] for r in results}):
        rs = sorted((r for r in results if r["store"] == store), key=lambda r: r["size"])
        top = rs[-1]  # the aim is 10^4 -> 10^5; else the smallest size measured against the largest
        base = next((r for r in rs if r["size"] == 10_000 and r is not top), rs[0])
        growth = top["run"]["peak_rss"] / base["run"]["peak_rss"]
        out.append(f"- {store}: driver peak RSS {top['size']:,} vs {base['size']:,} sources: {growth:.2f}x "
                   f"(aim <= {AIM_RSS_GROWTH}x): **{'pass' if growth <= AIM_RSS_GROWTH else 'FAIL'}**")
        worst_state = max(r["run"]["counts"].get("state", 0) / r["size"] for r in rs)
        out.append(f"- {store}: state objects per source {worst_state:.2f} (aim <= {AIM_STATE_PER_SOURCE}): "
                   f"**{'pass' if worst_state <= AIM_STATE_PER_SOURCE else 'FAIL'}**")
        for r in rs:
            ms = 1000 * sum(r["run"]["cpu"].values()) / r["size"]
            wr = 1000 * r["run"]["write_task_s"] / max(1, r["run"]["clips"])
            out.append(f"- {store} {r['size']:,}: machinery {ms:.2f} CPU ms / source (aim <= {AIM_MACHINERY_CPU_MS}): "
                       f"**{'pass' if ms <= AIM_MACHINERY_CPU_MS else 'FAIL'}**; write stage {wr:.3f} ms / clip "
                       f"(aim <= {AIM_WRITE_MS_PER_CLIP}): **{'pass' if wr <= AIM_WRITE_MS_PER_CLIP else 'FAIL'}**")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_scale.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="source counts on a local directory")
    parser.add_argument("--s3-sizes", default="1000,10000",
                        help="source counts on the loopback S3 server (moto); empty for none")
    parser.add_argument("--clips", type=int, default=4, help="clips per source (local)")
    parser.add_argument("--s3-clips", type=int, default=4, help="clips per source on S3")
    parser.add_argument("--clip-bytes", type=int, default=1024, help="bytes of each (synthetic) clip file")
    parser.add_argument("--nominal-clip-mb", type=float, default=2.0,
                        help="clip size the rows claim, which decides shard planning (0: the real bytes)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of each job's local Ray")
    parser.add_argument("--state-sample", type=int, default=2000, help="sources whose state write is timed")
    parser.add_argument("--frontier-sample", type=int, default=8, help="partitions whose frontier is timed directly")
    parser.add_argument("--timeout-s", type=float, default=1800, help="limit of each child process")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--from-json", help="no run: print the report of results saved by --json (comma-separated "
                        "files, concatenated)")
    parser.add_argument("--keep", action="store_true", help="keep the local corpora (under a temporary directory)")
    parser.add_argument("--child", choices=["prepare", "run"], help=argparse.SUPPRESS)
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    started = datetime.now(UTC)
    if args.from_json:
        saved = [r for f in args.from_json.split(",") for r in json.loads(Path(f).read_text())]
        print(report(saved, args, started))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    s3_sizes = [int(s) for s in args.s3_sizes.split(",") if s]
    results = []
    try:
        for size in sizes:
            results.append(measure("local", size, args, tmp, None))
        if s3_sizes:
            from tests.s3_server import S3Server

            with S3Server() as server:
                for size in s3_sizes:
                    results.append(measure("s3", size, args, tmp, server))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results, args, started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
